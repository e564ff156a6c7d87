//! The shapes dataset: deterministic, disjoint splits, every family present, answers that are
//! single tokens of the shipped vocabulary, scenes that respect their own rules.

mod common;

use std::collections::{BTreeMap, HashSet};

use relvqa::eval::shapes::{self, Family, Split, FAMILIES};

#[test]
fn samples_are_deterministic() {
    for split in [Split::Train, Split::Test] {
        let a = shapes::sample(split, 17);
        let b = shapes::sample(split, 17);
        assert_eq!(a.image, b.image);
        assert_eq!(a.question, b.question);
    }
}

#[test]
fn splits_do_not_share_samples() {
    let mut seen = HashSet::new();
    for split in [Split::Train, Split::Dev, Split::Val, Split::Test] {
        for i in 0..300 {
            let s = shapes::sample(split, i);
            assert!(
                seen.insert(s.image.into_raw()),
                "{split:?} sample {i} repeats an image of another split"
            );
        }
    }
}

#[test]
fn every_family_is_asked_and_answers_are_balanced_enough() {
    let mut by_family: BTreeMap<Family, BTreeMap<String, usize>> = BTreeMap::new();
    for i in 0..2000 {
        let q = shapes::sample(Split::Test, i).question;
        *by_family
            .entry(q.family)
            .or_default()
            .entry(q.answer)
            .or_default() += 1;
    }
    for f in FAMILIES {
        let answers = by_family
            .get(&f)
            .unwrap_or_else(|| panic!("family {f:?} never asked"));
        let n: usize = answers.values().sum();
        assert!(n >= 100, "{f:?}: only {n} questions in 2000");
        let top = answers.values().max().copied().unwrap_or(0);
        // No family can be solved by always giving its most common answer.
        assert!(
            (top as f64) < 0.75 * n as f64,
            "{f:?} answers are too skewed: {answers:?}"
        );
    }
}

#[test]
fn answers_are_single_known_tokens() {
    let tok = common::tokenizer();
    let unk = tok.unk_id().unwrap();
    for i in 0..1000 {
        let q = shapes::sample(Split::Dev, i).question;
        let a = tok.encode(&q.answer).unwrap();
        assert_eq!(a.len(), 1, "answer `{}` is not one token", q.answer);
        assert_ne!(a[0], unk);
        assert!(
            !tok.encode(&q.text).unwrap().contains(&unk),
            "question `{}` has unknown words",
            q.text
        );
    }
}

#[test]
fn scenes_follow_their_rules_and_answers_follow_the_scene() {
    for i in 0..500 {
        let s = shapes::sample(Split::Val, i);
        let objs = &s.scene.objects;
        assert!((1..=shapes::MAX_OBJECTS).contains(&objs.len()));
        let pairs: HashSet<_> = objs.iter().map(|o| (o.color, o.kind)).collect();
        assert_eq!(
            pairs.len(),
            objs.len(),
            "colour+kind must identify an object"
        );
        let q = &s.question;
        match q.family {
            Family::Count => assert_eq!(q.answer, objs.len().to_string()),
            Family::Exist => {
                let present = objs
                    .iter()
                    .any(|o| q.text == format!("is there a {} ?", o.describe()));
                assert_eq!(q.answer, if present { "yes" } else { "no" });
            }
            Family::Size => {
                let o = objs
                    .iter()
                    .find(|o| q.text == format!("what size is the {} ?", o.describe()))
                    .unwrap();
                assert_eq!(q.answer, o.size.name());
            }
            _ => {}
        }
        assert_eq!(
            s.image.dimensions(),
            (shapes::IMAGE_SIDE, shapes::IMAGE_SIDE)
        );
    }
}

/// A request that cannot fit (six objects in a 24-pixel image) still ends, with fewer objects.
#[test]
fn impossible_scenes_shrink_instead_of_looping() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let scene = shapes::render::random_scene(&mut rng, 24, 6);
    assert!(!scene.objects.is_empty() && scene.objects.len() < 6);
}

/// Training may draw other scenes and follow-ups, but a chat's first question and image are
/// what evaluation sees: the default draw is exactly `sample`.
#[test]
fn training_draws_leave_the_evaluated_sample_unchanged() {
    use shapes::{Draw, Followups};
    for i in 0..50 {
        let s = shapes::sample(Split::Train, i);
        let shapes_draw = Draw {
            max_objects: shapes::MAX_OBJECTS,
            followups: Followups::Shapes,
        };
        for draw in [Draw::EVAL, shapes_draw] {
            let (t, more) = shapes::sample_with_followups(Split::Train, i, 3, draw);
            assert_eq!(t.image, s.image, "sample {i}");
            assert_eq!(t.question, s.question, "sample {i}");
            assert_eq!(more.len(), 3);
        }
    }
}

/// `Followups::Shapes` asks the shape of every uniquely coloured object (as many as fit),
/// each answer true of the scene, before any random question.
#[test]
fn shape_followups_name_every_uniquely_coloured_object() {
    use shapes::{Draw, Followups};
    let draw = Draw {
        max_objects: shapes::MAX_OBJECTS,
        followups: Followups::Shapes,
    };
    for i in 0..200 {
        let (s, more) = shapes::sample_with_followups(Split::Train, i, 6, draw);
        let objs = &s.scene.objects;
        let uniq: Vec<_> = objs
            .iter()
            .filter(|o| objs.iter().filter(|p| p.color == o.color).count() == 1)
            .collect();
        let asked: Vec<_> = more.iter().take(uniq.len()).collect();
        for q in &asked {
            assert_eq!(q.family, Family::Shape, "sample {i}: {}", q.text);
            let o = uniq
                .iter()
                .find(|o| q.text == format!("what shape is the {} object ?", o.color_name()))
                .unwrap_or_else(|| panic!("sample {i}: {} names no unique colour", q.text));
            assert_eq!(q.answer, o.kind.name());
        }
        let named: HashSet<_> = asked.iter().map(|q| q.text.clone()).collect();
        assert_eq!(
            named.len(),
            uniq.len().min(6),
            "sample {i}: each object once"
        );
    }
}

/// The curriculum's draw: one object per scene, questions still valid for it.
#[test]
fn the_curriculum_draws_single_object_scenes() {
    let o = relvqa::train::TrainOptions {
        curriculum_steps: 10,
        followups: shapes::Followups::Shapes,
        ..Default::default()
    };
    assert_eq!(o.draw_at(9).max_objects, 1);
    assert_eq!(o.draw_at(10).max_objects, shapes::MAX_OBJECTS);
    let mut counts = BTreeMap::new();
    for i in 0..100 {
        let (s, more) = shapes::sample_with_followups(Split::Train, i, 2, o.draw_at(0));
        assert_eq!(s.scene.objects.len(), 1, "sample {i}");
        for q in std::iter::once(&s.question).chain(&more) {
            *counts.entry(q.family).or_insert(0) += 1;
            if q.family == Family::Count {
                assert_eq!(q.answer, "1");
            }
        }
    }
    assert!(counts.get(&Family::Shape).copied().unwrap_or(0) >= 100);
}

/// Each 16x16 cell is owned by the object covering most of it, and only when the object
/// really shows there; the batch turns owners into (kind, colour) targets in token order.
#[test]
fn cell_owners_follow_the_pixels() {
    use relvqa::eval::shapes::render::{cell_owners, Kind, Object, Scene, Size};
    let square = Object {
        kind: Kind::Square,
        color: 2,
        size: Size::Large,
        cx: 40.0,
        cy: 24.0,
    };
    let scene = Scene {
        side: 64,
        objects: vec![square],
    };
    let owners = cell_owners(&scene, 4, 12);
    assert_eq!(owners.len(), 16);
    // The square spans x 31.9..48.1, y 15.9..32.1: cells (row 0-2, col 1-3) touch it, but
    // only cell (1, 2) (x 32..48, y 16..32) holds it almost whole.
    assert_eq!(owners[4 + 2], Some(0));
    for (i, o) in owners.iter().enumerate() {
        let (r, c) = (i / 4, i % 4);
        if r == 3 || c == 0 {
            assert_eq!(*o, None, "cell {r},{c} is far from the square");
        }
    }
    // A threshold above any cell's share leaves every cell empty.
    assert!(cell_owners(&scene, 4, 257).iter().all(Option::is_none));

    let tok = common::tokenizer();
    let cfg = common::tiny_config(&tok);
    let mut vp = relvqa::train::params::VarParams::new(1);
    let model = relvqa::model::idefics3::Idefics3::load(&mut vp, &cfg).unwrap();
    let vqa =
        relvqa::model::generate::Vqa::new(relvqa::backend::cpu::CpuBackend::new(), model, tok);
    let b =
        relvqa::train::batch::make_batch(&vqa, Split::Train, 0..5, 1, shapes::Draw::EVAL).unwrap();
    let grid = vqa.model.cfg.image_grid();
    assert_eq!(b.cell_kinds.len(), 5 * grid * grid);
    for i in 0..5u64 {
        let s = shapes::sample(Split::Train, i);
        let owners = cell_owners(&s.scene, grid, 12);
        for (c, o) in owners.iter().enumerate() {
            let at = i as usize * grid * grid + c;
            match o {
                Some(k) => {
                    let obj = &s.scene.objects[*k];
                    assert_eq!(b.cell_kinds[at], obj.kind.index() as u32);
                    assert_eq!(b.cell_colors[at], obj.color as u32);
                }
                None => {
                    assert_eq!(b.cell_kinds[at], relvqa::train::batch::NO_OBJECT_KIND);
                    assert_eq!(b.cell_colors[at], relvqa::train::batch::NO_OBJECT_COLOR);
                }
            }
        }
    }
}
