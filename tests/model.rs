//! The model definition end to end on the CPU backend: KV-cache consistency, generation
//! outputs, tokenizer round trip, and a training smoke test through the same definition.

mod common;

use relvqa::backend::cpu::CpuBackend;
use relvqa::backend::Backend;
use relvqa::eval::shapes::{self, Split};
use relvqa::model::image::image_to_pixels;
use relvqa::model::loader::load_dir;
use relvqa::model::tokenizer::VqaTokenizer;
use relvqa::train::{self, TrainEvent, TrainOptions};

fn last_row(b: &CpuBackend, t: &candle_core::Tensor) -> Vec<f32> {
    let h = pollster::block_on(b.read_f32(t)).unwrap();
    let d = *h.shape.last().unwrap();
    h.data[h.data.len() - d..].to_vec()
}

/// Decoding token by token with the cache gives the same states as one pass over everything.
#[test]
fn kv_cache_decode_matches_full_forward() {
    let d = common::tiny_model_dir();
    let vqa = load_dir(CpuBackend::new(), d.path()).unwrap();
    let b = &vqa.backend;
    let s = shapes::sample(Split::Val, 3);
    let prompt = vqa.prompt(&s.question.text).unwrap();
    let px = b.upload(&image_to_pixels(&s.image, 64).unwrap()).unwrap();
    let extra = [20u32, 31, 7];
    let mut all = prompt.ids.clone();
    all.extend(extra);
    let full = vqa
        .model
        .forward_hidden(b, &all, 1, Some(&px), None)
        .unwrap();
    let full = pollster::block_on(b.read_f32(&full)).unwrap();
    let dim = vqa.model.cfg.text_config.hidden_size;

    let mut cache = vqa.model.new_cache(64);
    vqa.model
        .forward_hidden(b, &prompt.ids, 1, Some(&px), Some(&mut cache))
        .unwrap();
    for (i, t) in extra.iter().enumerate() {
        let h = vqa
            .model
            .forward_hidden(b, &[*t], 1, None, Some(&mut cache))
            .unwrap();
        let got = last_row(b, &h);
        let pos = prompt.ids.len() + i;
        let want = &full.data[pos * dim..(pos + 1) * dim];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "position {pos}: {g} vs {w}");
        }
    }
    assert_eq!(cache.len(), all.len());
    // A generated `<image>` id is an ordinary token once the image is in the cache.
    let h = vqa
        .model
        .forward_tokens(b, &[vqa.tokenizer.special.image], 1, Some(&mut cache))
        .unwrap();
    assert_eq!(b.shape(&h), vec![1, 1, dim]);
}

#[test]
fn generation_reports_probabilities_and_selector_features() {
    let d = common::tiny_model_dir();
    let vqa = load_dir(CpuBackend::new(), d.path()).unwrap();
    let s = shapes::sample(Split::Test, 0);
    let g =
        pollster::block_on(vqa.answer(&image_to_pixels(&s.image, 64).unwrap(), &s.question.text))
            .unwrap();
    let dim = vqa.model.cfg.text_config.hidden_size;
    assert_eq!(g.features.image_pooled.len(), dim);
    assert_eq!(g.features.question_pooled.len(), dim);
    assert_eq!(g.features.answer_last.len(), dim);
    assert_eq!(g.tokens.len(), g.token_probs.len());
    assert!(g.tokens.len() <= vqa.max_new_tokens);
    assert!(g.token_probs.iter().all(|p| *p > 0.0 && *p <= 1.0));
    assert!(g.maxprob() > 0.0 && g.maxprob() <= 1.0);
    // Different images give different pooled image states (the image reaches the decoder).
    let s2 = shapes::sample(Split::Test, 1);
    let g2 =
        pollster::block_on(vqa.answer(&image_to_pixels(&s2.image, 64).unwrap(), &s.question.text))
            .unwrap();
    assert_ne!(g.features.image_pooled, g2.features.image_pooled);
    assert_eq!(
        g.features.question_pooled.len(),
        g2.features.question_pooled.len()
    );
}

#[test]
fn tokenizer_json_round_trips_and_keeps_special_ids() {
    let tok = common::tokenizer();
    let json = tok.to_json().unwrap();
    let back = VqaTokenizer::from_bytes(json.as_bytes()).unwrap();
    assert_eq!(tok.special, back.special);
    let q = "What COLOR is the triangle ?";
    assert_eq!(tok.encode(q).unwrap(), back.encode(q).unwrap());
    assert_eq!(
        back.decode(&back.encode(q).unwrap()).unwrap(),
        "what color is the triangle ?"
    );
    // Special tokens written in text are recognised as single tokens.
    let ids = back.encode("<image><image>").unwrap();
    assert_eq!(ids, vec![back.special.image, back.special.image]);
    assert_eq!(
        back.encode("purple zebra ?").unwrap()[1],
        back.unk_id().unwrap()
    );
}

#[test]
fn prompt_has_idefics3_layout() {
    let d = common::tiny_model_dir();
    let vqa = load_dir(CpuBackend::new(), d.path()).unwrap();
    let p = vqa.prompt("is there a red circle ?").unwrap();
    let sp = vqa.tokenizer.special;
    assert_eq!(p.ids[0], sp.im_start);
    assert_eq!(p.ids[p.image.start - 2], sp.fake_image);
    assert_eq!(p.ids[p.image.start - 1], sp.global_img);
    assert_eq!(p.image.len(), vqa.model.cfg.image_seq_len());
    assert!(p.ids[p.image.clone()].iter().all(|t| *t == sp.image));
    assert_eq!(p.ids[p.image.end], sp.fake_image);
    assert_eq!(
        vqa.tokenizer.decode(&p.ids[p.question.clone()]).unwrap(),
        "is there a red circle ?"
    );
    assert_eq!(p.ids[p.question.end], sp.end_of_utterance);
    assert_eq!(
        vqa.tokenizer.decode(&p.ids[p.question.end + 1..]).unwrap(),
        "assistant :"
    );
}

/// A few steps of AdamW through the shared model definition lower the loss: gradients reach
/// the parameters through every op.
#[test]
fn training_steps_lower_the_loss() {
    let tok = common::tokenizer();
    let cfg = common::tiny_config(&tok);
    let o = TrainOptions {
        steps: 40,
        batch: 16,
        lr: 1e-2,
        warmup: 5,
        eval_every: 1000,
        val_samples: 32,
        ..Default::default()
    };
    let mut losses = Vec::new();
    let t = train::train(tok, cfg, &o, |e| {
        if let TrainEvent::Step { loss, .. } = e {
            losses.push(loss)
        }
    })
    .unwrap();
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[35..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    // Every parameter moved from its (seeded, reproducible) initial value: none is cut off
    // from the loss by an op without a backward pass.
    let mut fresh = relvqa::train::params::VarParams::new(o.seed);
    relvqa::model::idefics3::Idefics3::load(&mut fresh, &common::tiny_config(&common::tokenizer()))
        .unwrap();
    assert_eq!(fresh.vars.len(), t.vars.len());
    for ((n0, v0), (n1, v1)) in fresh.vars.iter().zip(&t.vars) {
        assert_eq!(n0, n1);
        let diff = (v0.as_tensor() - v1.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff > 0.0, "parameter {n0} did not change");
    }
    assert_eq!(t.val_history.len(), 1);
}

/// With the auxiliary per-image-token loss on, training still runs through the same model and
/// the probe is not among the saved parameters (the checkpoint stays transformers-loadable).
#[test]
fn the_auxiliary_probe_trains_but_is_not_saved() {
    let tok = common::tokenizer();
    let cfg = common::tiny_config(&tok);
    let o = TrainOptions {
        steps: 3,
        batch: 8,
        warmup: 1,
        eval_every: 1000,
        val_samples: 8,
        aux_weight: 1.0,
        ..Default::default()
    };
    let mut plain_losses = Vec::new();
    let mut aux_losses = Vec::new();
    let plain = TrainOptions {
        aux_weight: 0.0,
        ..o.clone()
    };
    let t0 = train::train(common::tokenizer(), cfg.clone(), &plain, |e| {
        if let TrainEvent::Step { loss, .. } = e {
            plain_losses.push(loss)
        }
    })
    .unwrap();
    let t1 = train::train(tok, cfg, &o, |e| {
        if let TrainEvent::Step { loss, .. } = e {
            aux_losses.push(loss)
        }
    })
    .unwrap();
    let names = |t: &train::Trained| t.vars.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&t0), names(&t1));
    // Same seed, same first batch: the first step's loss differs by exactly the weighted
    // auxiliary term, which is positive (a cross-entropy).
    assert!(
        aux_losses[0] > plain_losses[0] + 0.5,
        "{aux_losses:?} vs {plain_losses:?}"
    );
    assert!(aux_losses.iter().all(|l| l.is_finite()));
}

/// The loss's gradient reaches every parameter, the vision tower included (a parameter moving
/// under AdamW alone proves nothing: weight decay moves it too).
#[test]
fn every_parameter_gets_a_gradient() {
    let tok = common::tokenizer();
    let cfg = common::tiny_config(&tok);
    let mut vp = relvqa::train::params::VarParams::new(3);
    let model = relvqa::model::idefics3::Idefics3::load(&mut vp, &cfg).unwrap();
    let vqa = relvqa::model::generate::Vqa::new(CpuBackend::new(), model, tok);
    let b = relvqa::train::batch::make_batch(
        &vqa,
        Split::Train,
        0..8,
        3,
        relvqa::eval::shapes::Draw::EVAL,
    )
    .unwrap();
    let grads = train::batch_loss(&vqa, &b).unwrap().backward().unwrap();
    for (name, v) in &vp.vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}
