//! Where MBQ's scaled groups sit in a decoder, by name, and how a group's scales fold into the
//! op before it so that the network computes the same function.

use super::HostWeights;
use crate::error::{Error, Result};

/// The decoder a calibration observes and a search folds into.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderLayout {
    /// Name prefix of every decoder layer, before its index: `model.text_model.layers.`
    /// (Idefics3), `model.layers.` or `model.language_model.layers.` (Qwen2-VL, by checkpoint
    /// layout). Static because the recording backend filters on it for the whole calibration.
    pub layers_prefix: &'static str,
    pub layers: usize,
    /// Whether `v_proj`'s output channels are `o_proj`'s input channels one to one (as many
    /// key/value heads as query heads). With grouped-query attention one value channel feeds
    /// several `o_proj` columns, which would need one scale shared per head group; AWQ and MBQ
    /// skip v -> o there, and so do we.
    pub v_feeds_o: bool,
}

/// One scaled group: the op whose output feeds the linears, and the linears.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub label: &'static str,
    /// The previous op's name (a norm or a linear), without `.weight`.
    pub prev: String,
    /// The linears' names, without `.weight`; they share the previous op's output as input.
    pub linears: Vec<String>,
    /// Vision/text gradient ratio that weighs this group's vision-token error.
    pub ratio: f32,
}

impl DecoderLayout {
    /// Layer index and the rest of a decoder linear's name (`self_attn.o_proj`); `None` for
    /// any other name.
    pub fn parse<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        let rest = name.strip_prefix(self.layers_prefix)?;
        let (i, tail) = rest.split_once('.')?;
        Some((i.parse().ok()?, tail))
    }

    /// Layer `l`'s scaled groups in the order they are searched and folded: each search sees
    /// the weights the previous folds left (v_proj's columns are scaled by the norm's fold
    /// before its rows are by v -> o), as in AWQ's `auto_scale`.
    pub fn groups(&self, l: usize, ratio_attn: f32, ratio_mlp: f32) -> Vec<Group> {
        let p = format!("{}{l}", self.layers_prefix);
        let mut groups = vec![Group {
            label: "input_layernorm->q,k,v",
            prev: format!("{p}.input_layernorm"),
            linears: ["q", "k", "v"]
                .iter()
                .map(|n| format!("{p}.self_attn.{n}_proj"))
                .collect(),
            ratio: ratio_attn,
        }];
        if self.v_feeds_o {
            groups.push(Group {
                label: "v_proj->o_proj",
                prev: format!("{p}.self_attn.v_proj"),
                linears: vec![format!("{p}.self_attn.o_proj")],
                ratio: ratio_attn,
            });
        }
        groups.push(Group {
            label: "post_attention_layernorm->gate,up",
            prev: format!("{p}.post_attention_layernorm"),
            linears: vec![format!("{p}.mlp.gate_proj"), format!("{p}.mlp.up_proj")],
            ratio: ratio_mlp,
        });
        groups.push(Group {
            label: "up_proj->down_proj",
            prev: format!("{p}.mlp.up_proj"),
            linears: vec![format!("{p}.mlp.down_proj")],
            ratio: ratio_mlp,
        });
        groups
    }
}

fn shape_error(name: &str, expected: Vec<usize>, found: &[usize]) -> Error {
    Error::TensorShape {
        name: name.into(),
        expected,
        found: found.to_vec(),
    }
}

/// Multiply the linears' input columns by `s` and divide the previous op's output channels by
/// it, so the network's function is unchanged (up to float rounding).
///
/// The previous op's output channel `c` is every parameter that scales it: element `c` of a
/// norm's weight, row `c` of a linear's, and element `c` of either's bias when it has one —
/// Qwen2's `v_proj` does, and leaving its bias unscaled would shift every value vector by
/// `b·(1 - 1/s)` through o_proj. The linears' own biases are added after the product
/// `(x / s) · (W·diag(s))ᵀ = x · Wᵀ`, so they stay as they are.
pub fn fold(w: &mut HostWeights, g: &Group, s: &[f32]) -> Result<()> {
    for n in &g.linears {
        let wn = format!("{n}.weight");
        let wt = w
            .get_mut(&wn)
            .ok_or_else(|| Error::MissingTensor { name: wn.clone() })?;
        match wt.shape.as_slice() {
            [_, cols] if *cols == s.len() => {}
            found => return Err(shape_error(&wn, vec![0, s.len()], found)),
        }
        for row in wt.data.chunks_exact_mut(s.len().max(1)) {
            for (v, si) in row.iter_mut().zip(s) {
                *v *= si;
            }
        }
    }
    let wn = format!("{}.weight", g.prev);
    let prev = w
        .get_mut(&wn)
        .ok_or_else(|| Error::MissingTensor { name: wn.clone() })?;
    // A norm's weight `[c]` or a linear's `[c, k]`: channel `c` is element or row `c`.
    let per_channel = match prev.shape.as_slice() {
        [c] | [c, _] if *c == s.len() => prev.data.len() / s.len().max(1),
        found => return Err(shape_error(&wn, vec![s.len()], found)),
    };
    for (chunk, si) in prev.data.chunks_exact_mut(per_channel.max(1)).zip(s) {
        for v in chunk {
            *v /= si;
        }
    }
    let bn = format!("{}.bias", g.prev);
    if let Some(bias) = w.get_mut(&bn) {
        if bias.shape.as_slice() != [s.len()] {
            return Err(shape_error(&bn, vec![s.len()], &bias.shape));
        }
        for (v, si) in bias.data.iter_mut().zip(s) {
            *v /= si;
        }
    }
    Ok(())
}
