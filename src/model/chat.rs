//! Chat templates as the checkpoint ships them: the Jinja source in `chat_template.json` or
//! `tokenizer_config.json` (`chat_template`, a string or a list of named templates), rendered
//! with minijinja the way transformers' `apply_chat_template` renders it. Reading the template
//! instead of hard-coding one prompt format is what lets a converted SmolLM2 (ChatML with
//! `<|im_end|>`) and a SmolVLM (`User:` … `<end_of_utterance>`) both be prompted correctly.

use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file a checkpoint may keep its template in (newer transformers).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.json";
/// The file that held it before, and holds `bos_token` / `eos_token`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// One chat turn. `content` is plain text (text-only templates read it as a string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

fn json_err(file: &str, e: impl std::fmt::Display) -> Error {
    Error::ChatTemplate(format!("{file}: {e}"))
}

/// `"<s>"` or `{"content": "<s>", ...}` (both appear in tokenizer_config.json files).
fn token_string(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// The default template out of `chat_template`: a string, or transformers' list of
/// `{"name", "template"}` where the one named `default` is used.
fn template_source(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// The prompt text for one user `message`: rendered through the checkpoint's chat template
/// with the assistant's turn opened, or the message itself with `raw` (plain continuation).
/// Shared by `relvqa generate` and the page, so both prompt a model the same way.
pub fn user_prompt(template: Option<&ChatTemplate>, message: &str, raw: bool) -> Result<String> {
    if message.trim().is_empty() {
        return Err(Error::Question("the prompt is empty".into()));
    }
    let limit = crate::model::text_gen::MAX_PROMPT_BYTES;
    if message.len() > limit {
        return Err(Error::Question(format!(
            "the prompt is {} bytes long; the limit is {limit}",
            message.len()
        )));
    }
    if raw {
        return Ok(message.to_string());
    }
    let t = template.ok_or_else(|| {
        Error::ChatTemplate(format!(
            "the model has no chat template ({TOKENIZER_CONFIG_FILE} or {CHAT_TEMPLATE_FILE}); \
             ask for raw text (--raw) to continue the prompt as plain text"
        ))
    })?;
    t.render(&[Message::user(message)], true)
}

impl ChatTemplate {
    /// The template of a model or package directory (a package's files checked against
    /// its manifest).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_model_dir(dir: &std::path::Path) -> Result<Option<Self>> {
        use crate::package::read_model_file;
        Self::from_checkpoint(
            read_model_file(dir, TOKENIZER_CONFIG_FILE)?.as_deref(),
            read_model_file(dir, CHAT_TEMPLATE_FILE)?.as_deref(),
        )
    }

    /// The template from a checkpoint's files (either may be absent); `None` when neither
    /// holds one. `chat_template.json` wins, as in transformers.
    pub fn from_checkpoint(
        tokenizer_config: Option<&[u8]>,
        chat_template_json: Option<&[u8]>,
    ) -> Result<Option<Self>> {
        let tc: serde_json::Value = match tokenizer_config {
            Some(b) => serde_json::from_slice(b).map_err(|e| json_err(TOKENIZER_CONFIG_FILE, e))?,
            None => serde_json::Value::Null,
        };
        let from_file = match chat_template_json {
            Some(b) => {
                let v: serde_json::Value =
                    serde_json::from_slice(b).map_err(|e| json_err(CHAT_TEMPLATE_FILE, e))?;
                v.get("chat_template").and_then(template_source)
            }
            None => None,
        };
        let Some(source) = from_file.or_else(|| tc.get("chat_template").and_then(template_source))
        else {
            return Ok(None);
        };
        let t = Self {
            source,
            bos_token: token_string(tc.get("bos_token")),
            eos_token: token_string(tc.get("eos_token")),
        };
        // Parse now, so a broken template is an error at load time, not at the first question.
        t.environment()?;
        Ok(Some(t))
    }

    fn environment(&self) -> Result<Environment<'_>> {
        let mut env = Environment::new();
        // transformers defines this for templates that refuse a conversation shape.
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        Ok(env)
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.environment()?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::ChatTemplate(e.to_string()))
    }

    /// Whether the template places an image: a user turn of an image and a text renders an
    /// `<image>` marker. A text-only template (SmolLM2's, kept by a GGUF conversion) renders
    /// a content list as text, so it cannot prompt a vision-language model.
    pub fn takes_images(&self) -> bool {
        let probe = serde_json::json!([{
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "?"}],
        }]);
        self.render_json(&probe, true)
            .is_ok_and(|t| t.matches("<image>").count() == 1)
    }

    /// Like [`ChatTemplate::render`] for messages whose `content` is a list of parts
    /// (`{"type": "image"}`, `{"type": "text", "text": ..}`), as multimodal templates such as
    /// Qwen2-VL's read them.
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let env = self.environment()?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::ChatTemplate(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn renders_a_chatml_template_from_tokenizer_config() {
        let tc =
            serde_json::json!({"chat_template": CHATML, "eos_token": {"content": "<|im_end|>"}});
        let bytes = serde_json::to_vec(&tc).unwrap_or_default();
        let t = ChatTemplate::from_checkpoint(Some(&bytes), None)
            .ok()
            .flatten();
        let Some(t) = t else {
            panic!("template not found");
        };
        assert_eq!(t.eos_token, "<|im_end|>");
        let text = t.render(&[Message::user("Hi")], true).unwrap_or_default();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chat_template_json_wins_and_named_lists_pick_default() {
        let tc = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ messages[0]['content'] }}!"}
        ]});
        let tc = serde_json::to_vec(&tc).unwrap_or_default();
        let t = ChatTemplate::from_checkpoint(Some(&tc), None)
            .ok()
            .flatten();
        assert_eq!(
            t.map(|t| t.source),
            Some("{{ messages[0]['content'] }}!".into())
        );
        let ct =
            serde_json::to_vec(&serde_json::json!({"chat_template": "file"})).unwrap_or_default();
        let t = ChatTemplate::from_checkpoint(Some(&tc), Some(&ct))
            .ok()
            .flatten();
        assert_eq!(t.map(|t| t.source), Some("file".into()));
    }

    #[test]
    fn broken_templates_and_raise_exception_are_errors() {
        let tc = serde_json::to_vec(&serde_json::json!({"chat_template": "{% for %}"}))
            .unwrap_or_default();
        assert!(matches!(
            ChatTemplate::from_checkpoint(Some(&tc), None),
            Err(Error::ChatTemplate(_))
        ));
        let tc = serde_json::to_vec(
            &serde_json::json!({"chat_template": "{{ raise_exception('no system role') }}"}),
        )
        .unwrap_or_default();
        let t = ChatTemplate::from_checkpoint(Some(&tc), None)
            .ok()
            .flatten();
        let r = t.map(|t| t.render(&[Message::user("x")], true));
        assert!(matches!(r, Some(Err(Error::ChatTemplate(m))) if m.contains("no system role")));
        assert!(matches!(
            ChatTemplate::from_checkpoint(None, None),
            Ok(None)
        ));
    }
}
