//! Out-of-distribution sets: deterministic, shift only what they claim to shift, mixtures with
//! exact nested counts, and easy-VQA loaded with an honest report of what the model cannot read.

use std::collections::HashSet;

use relvqa::error::Error;
use relvqa::eval::ood::degrade::{self, degrade};
use relvqa::eval::ood::rephrase::{rephrase, templates};
use relvqa::eval::ood::{id_item, mixture, ood_item, ood_item_of_kind, EasyVqa, OodKind};
use relvqa::eval::shapes::{self, render, Family, Split, FAMILIES};

fn vocabulary() -> HashSet<String> {
    shapes::vocabulary().into_iter().collect()
}

/// Colours, shapes and relation words: what makes a question answerable.
fn content_words(text: &str) -> Vec<String> {
    let mut content: HashSet<&str> = render::COLORS.iter().map(|c| c.0).collect();
    content.extend(render::KINDS.iter().map(|k| k.name()));
    content.extend(["left", "right", "above", "below"]);
    text.split_whitespace()
        .filter(|w| content.contains(w))
        .map(str::to_string)
        .collect()
}

#[test]
fn kinds_round_trip_by_name_and_serde() {
    for k in OodKind::ALL {
        assert_eq!(OodKind::parse(k.name()).unwrap(), k);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", k.name()));
        assert_eq!(serde_json::from_str::<OodKind>(&json).unwrap(), k);
    }
    assert_eq!(OodKind::LowLight.name(), "low_light");
    let err = OodKind::parse("fog").unwrap_err().to_string();
    assert!(err.contains("low_light"), "{err}");
}

#[test]
fn rephrasing_keeps_answer_and_content_and_leaves_the_training_templates() {
    let vocab = vocabulary();
    let mut seen_families = HashSet::new();
    for i in 0..600 {
        let q = shapes::sample(Split::Test, i).question;
        seen_families.insert(q.family);
        for variant in 0..templates(q.family).len() as u64 {
            let r = rephrase(&q, variant).unwrap();
            assert_eq!(r.answer, q.answer);
            assert_eq!(r.family, q.family);
            assert_ne!(r.text, q.text);
            assert!(
                r.text.split_whitespace().any(|w| !vocab.contains(w)),
                "`{}` uses only training words, so it is not a shift",
                r.text
            );
            let mut want = content_words(&q.text);
            let mut got = content_words(&r.text);
            want.sort();
            got.sort();
            assert_eq!(want, got, "`{}` -> `{}` lost content words", q.text, r.text);
        }
    }
    assert_eq!(seen_families.len(), FAMILIES.len());
}

#[test]
fn rephrasing_refuses_text_that_is_not_a_shapes_template() {
    let q = shapes::Question {
        text: "what colour is it ?".into(),
        answer: "red".into(),
        family: Family::Color,
    };
    assert!(matches!(rephrase(&q, 0), Err(Error::Invalid(_))));
}

#[test]
fn every_degradation_changes_the_image_and_keeps_its_size() {
    for i in 0..12 {
        let img = shapes::sample(Split::Test, i).image;
        for k in OodKind::ALL
            .into_iter()
            .filter(|k| k.is_image_degradation())
        {
            let d = degrade(k, &img, 7).unwrap();
            assert_eq!(d.dimensions(), img.dimensions(), "{k}");
            let changed = d.pixels().zip(img.pixels()).filter(|(a, b)| a != b).count();
            assert!(
                changed * 4 > (img.width() * img.height()) as usize,
                "{k}: {changed}"
            );
            assert_eq!(d, degrade(k, &img, 7).unwrap(), "{k} is not deterministic");
        }
    }
    let img = shapes::sample(Split::Test, 0).image;
    assert_ne!(
        degrade(OodKind::Noise, &img, 1).unwrap(),
        degrade(OodKind::Noise, &img, 2).unwrap()
    );
    assert!(degrade(OodKind::Conversational, &img, 0).is_err());
    let mean = |im: &image::RgbImage| im.as_raw().iter().map(|&v| v as f64).sum::<f64>();
    assert!(mean(&degrade::low_light(&img, 0).unwrap()) < 0.6 * mean(&img));
}

#[test]
fn items_are_deterministic_and_ood_items_shift_one_thing() {
    let easy = EasyVqa::default();
    for i in 0..60u64 {
        let a = id_item(Split::Test, i);
        assert_eq!(a, id_item(Split::Test, i));
        assert_eq!(a.id, format!("test/{i}"));
        assert!(a.ood.is_none() && a.answerable);
        let kind = OodKind::ALL[(i % 6) as usize];
        if kind == OodKind::EasyVqa {
            assert!(matches!(
                ood_item(Split::Test, i, &easy),
                Err(Error::Dataset(_))
            ));
            continue;
        }
        let o = ood_item(Split::Test, i, &easy).unwrap();
        assert_eq!(o, ood_item(Split::Test, i, &easy).unwrap());
        assert_eq!(o.ood, Some(kind));
        assert_eq!(o.id, format!("test/{i}/{kind}"));
        assert_eq!((&o.answers, &o.family), (&a.answers, &a.family));
        if kind == OodKind::Conversational {
            assert_eq!(o.image, a.image);
            assert_ne!(o.question, a.question);
        } else {
            assert_eq!(o.question, a.question);
            assert_ne!(o.image, a.image);
        }
    }
}

#[test]
fn mixtures_have_exact_nested_counts() {
    for n in [0usize, 1, 2, 3, 7, 10, 2000] {
        let mut prev: Option<Vec<bool>> = None;
        for p in [0u32, 25, 50, 75, 100] {
            let m = mixture(n, p).unwrap();
            assert_eq!(m.len(), n);
            let want = (n as f64 * p as f64 / 100.0).round() as usize;
            assert_eq!(m.iter().filter(|&&b| b).count(), want, "n={n} p={p}");
            if let Some(prev) = &prev {
                assert!(prev.iter().zip(&m).all(|(&a, &b)| !a || b), "not nested");
            }
            assert_eq!(m, mixture(n, p).unwrap());
            prev = Some(m);
        }
    }
    let m = mixture(2000, 25).unwrap();
    let first_half = m[..1000].iter().filter(|&&b| b).count();
    assert!((200..300).contains(&first_half), "not spread: {first_half}");
    assert!(matches!(mixture(10, 101), Err(Error::Invalid(_))));
}

#[test]
fn easy_vqa_from_an_empty_folder_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = EasyVqa::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Dataset(_)), "{err:?}");
    assert!(err.to_string().contains("make easy-vqa"), "{err}");
}

#[test]
fn easy_vqa_malformed_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("test/images")).unwrap();
    std::fs::write(dir.path().join("answers.txt"), "yes\nno\ncircle\n").unwrap();
    let q = dir.path().join("test/questions.json");
    std::fs::write(&q, "[[\"is there a circle?\", \"yes\"").unwrap();
    let err = EasyVqa::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("questions.json"), "{err}");
    std::fs::write(&q, r#"[["is there a circle?", "yes", 3]]"#).unwrap();
    let err = EasyVqa::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("3.png") && err.contains("make easy-vqa"),
        "{err}"
    );
    std::fs::write(dir.path().join("test/images/3.png"), b"not a png").unwrap();
    let err = EasyVqa::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("3.png"), "{err}");
}

/// Needs `make easy-vqa` (which `make test` runs first); without it this fails, naming that fix.
#[test]
fn easy_vqa_test_split_loads_and_reports_what_the_model_cannot_read() {
    let easy = EasyVqa::load(&EasyVqa::default_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(easy.len() > 1000, "{} questions", easy.len());
    let vocab = vocabulary();
    for q in easy.questions() {
        assert!(q.question.ends_with(" ?"), "{}", q.question);
        assert_eq!(
            q.answerable,
            !easy.unmappable_answers.contains_key(&q.answer)
        );
        for w in q.question.split_whitespace() {
            assert!(
                vocab.contains(w) || easy.unmapped_question_words.contains_key(w),
                "`{w}` neither mapped nor reported"
            );
        }
        assert_eq!(
            easy.image(q.image_id).map(|i| i.dimensions()),
            Some((64, 64))
        );
    }
    assert!(easy.unmapped_question_words.contains_key("image"));
    assert!(!easy.unmapped_question_words.contains_key("rectangle"));
    assert!(easy.unmappable_answers.contains_key("gray"));
    assert!(easy.unanswerable() > 0 && easy.unanswerable() < easy.len() / 2);
    eprintln!(
        "easy-VQA: {} test questions, {} unanswerable",
        easy.len(),
        easy.unanswerable()
    );
    eprintln!(
        "unmapped question words: {:?}",
        easy.unmapped_question_words
    );
    eprintln!("unmappable answers: {:?}", easy.unmappable_answers);

    let items: Vec<_> = (0..600u64)
        .filter(|i| i % 6 == 5)
        .map(|i| ood_item(Split::Test, i, &easy).unwrap())
        .collect();
    let ids: HashSet<_> = items.iter().map(|it| it.id.clone()).collect();
    assert_eq!(ids.len(), items.len(), "easy-VQA items repeat");
    for it in &items {
        assert_eq!(it.ood, Some(OodKind::EasyVqa));
        assert!(it.id.starts_with("easy-vqa/") && it.family.starts_with("easy_vqa_"));
        assert_eq!(it.image.dimensions(), (64, 64));
    }
    let all: HashSet<_> = (0..2000u64)
        .map(|i| {
            ood_item_of_kind(Split::Test, i, OodKind::EasyVqa, &easy)
                .unwrap()
                .id
        })
        .collect();
    assert_eq!(
        all.len(),
        2000,
        "a 2000-item easy-VQA test set repeats questions"
    );
    let val: HashSet<_> = (0..600u64)
        .map(|i| {
            ood_item_of_kind(Split::Val, i * 6 + 5, OodKind::EasyVqa, &easy)
                .unwrap()
                .id
        })
        .collect();
    assert!(
        val.is_disjoint(&ids),
        "val and test share easy-VQA questions"
    );
}
