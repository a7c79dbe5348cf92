//! Tests against the real all-MiniLM-L6-v2 model.
//!
//! The model is found through `PRECEDENT_MODEL_DIR` or the default cache directory; when it is
//! absent these tests fail and say to run `scripts/fetch-model` (CI installs it first).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use precedent_core::{BoxError, Embedder};
use precedent_embed::{
    Backend, BertEmbedder, CachedEmbedder, EmbedderOptions, Error, Pooling, Precision,
    resolve_model_dir,
};

fn model_dir() -> PathBuf {
    let explicit = std::env::var_os("PRECEDENT_MODEL_DIR").map(PathBuf::from);
    match resolve_model_dir(explicit.as_deref()) {
        Ok(dir) => dir,
        Err(e) => panic!(
            "these tests need the all-MiniLM-L6-v2 model: run scripts/fetch-model \
             (or set PRECEDENT_MODEL_DIR)\n{e}"
        ),
    }
}

fn load(dir: &Path, options: EmbedderOptions) -> BertEmbedder {
    BertEmbedder::load(dir, options)
        .unwrap_or_else(|e| panic!("loading {}: {}", dir.display(), error_chain(&e)))
}

fn native() -> &'static BertEmbedder {
    static MODEL: OnceLock<BertEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| load(&model_dir(), EmbedderOptions::default()))
}

fn candle() -> &'static BertEmbedder {
    static MODEL: OnceLock<BertEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        load(
            &model_dir(),
            EmbedderOptions {
                backend: Backend::Candle,
                ..EmbedderOptions::default()
            },
        )
    })
}

fn both() -> [&'static BertEmbedder; 2] {
    [native(), candle()]
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Texts of very different lengths: empty, a word, sentences, paragraphs, one past the limit.
fn mixed_texts() -> Vec<String> {
    let sentence = "The database primary failed over after replication lag exceeded thirty \
                    seconds, and the on-call engineer paused the batch jobs. ";
    vec![
        "OOM".to_owned(),
        String::new(),
        sentence.repeat(3),
        "Checked the load balancer health checks: all green.".to_owned(),
        sentence.repeat(20),
        "disk full".to_owned(),
        sentence.to_owned(),
        "Restarted kubelet on the affected nodes; pods were rescheduled within two minutes \
         and latency returned to normal."
            .to_owned(),
        sentence.repeat(7),
    ]
}

#[test]
fn reference_similarities_of_all_minilm_l6_v2() {
    let texts = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ];
    for model in both() {
        let v = model.embed_texts(&texts).unwrap();
        let got = [
            cosine(&v[0], &v[1]),
            cosine(&v[0], &v[2]),
            cosine(&v[1], &v[2]),
        ];
        let want = [0.6660, 0.1046, 0.1411];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 5e-5,
                "{:?}: similarities {got:?}, expected {want:?}",
                model.backend()
            );
        }
    }
}

#[test]
fn native_encoder_matches_candle_reference() {
    let texts = mixed_texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let a = native().embed_texts(&texts).unwrap();
    let b = candle().embed_texts(&texts).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = max_abs_diff(x, y);
        assert!(d < 1e-5, "text {i}: native and candle differ by {d}");
    }
    // Token level too, before pooling.
    let text = texts[4];
    let hn = native().hidden_states(text).unwrap();
    let hc = candle().hidden_states(text).unwrap();
    assert_eq!(hn.len(), hc.len());
    for (x, y) in hn.iter().zip(&hc) {
        assert!(max_abs_diff(x, y) < 1e-4);
    }
}

#[test]
fn model_facts() {
    let m = native();
    assert_eq!(m.dimension(), 384);
    assert_eq!(m.pooling(), Pooling::Mean);
    assert_eq!(m.max_seq_len(), 256);
    let id = m.model_id();
    let (name, hash) = id.split_once('@').unwrap();
    assert_eq!(name, "all-MiniLM-L6-v2");
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        candle().model_id(),
        id,
        "the id does not depend on the backend"
    );
    assert!(format!("{m:?}").contains(id));
}

#[test]
fn every_vector_has_unit_norm() {
    let texts = mixed_texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for model in both() {
        for v in model.embed_texts(&texts).unwrap() {
            assert_eq!(v.len(), 384);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }
}

#[test]
fn batches_equal_one_by_one() {
    let texts = mixed_texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = model_dir();
    for backend in [Backend::Native, Backend::Candle] {
        // Small batches, so the sorted texts are cut into several padded sub-batches.
        let small = load(
            &dir,
            EmbedderOptions {
                batch_size: 3,
                backend,
                ..EmbedderOptions::default()
            },
        );
        let whole = if backend == Backend::Native {
            native()
        } else {
            candle()
        };
        let single_thread = load(
            &dir,
            EmbedderOptions {
                threads: Some(1),
                backend,
                ..EmbedderOptions::default()
            },
        );
        assert_eq!(single_thread.threads(), 1);
        let batched_one_thread = single_thread.embed_texts(&texts).unwrap();
        let batched_small = small.embed_texts(&texts).unwrap();
        let batched_whole = whole.embed_texts(&texts).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let alone = &whole.embed_texts(&[text]).unwrap()[0];
            for batched in [&batched_small[i], &batched_whole[i], &batched_one_thread[i]] {
                let d = max_abs_diff(batched, alone);
                assert!(
                    d < 1e-5,
                    "{backend:?}, text {i}: batch and alone differ by {d}"
                );
            }
        }
    }
}

#[test]
fn order_is_preserved() {
    let texts = mixed_texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let forward = native().embed_texts(&texts).unwrap();
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let backward = native().embed_texts(&reversed).unwrap();
    for (i, v) in backward.iter().rev().enumerate() {
        assert!(max_abs_diff(v, &forward[i]) < 1e-5);
    }
    // Distinct texts give distinct vectors, so a permutation would have been caught.
    assert!(max_abs_diff(&forward[0], &forward[3]) > 1e-2);
    assert!(native().embed_texts(&[]).unwrap().is_empty());
}

#[test]
fn empty_and_huge_texts() {
    let huge: String = "connection reset by peer while draining the queue "
        .chars()
        .cycle()
        .take(100_000)
        .collect();
    assert_eq!(huge.chars().count(), 100_000);
    for model in both() {
        let counts = model.token_counts(&["", &huge]).unwrap();
        assert_eq!(
            counts,
            vec![2, model.max_seq_len()],
            "[CLS] [SEP] only; truncated"
        );
        let v = model.embed_texts(&["", &huge]).unwrap();
        for x in &v {
            assert!(x.iter().all(|f| f.is_finite()));
            let norm = x.iter().map(|f| f * f).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        // Truncation keeps the start: a text with the same first 256 tokens embeds the same.
        let prefix: String = huge.chars().take(5_000).collect();
        let p = model.embed_texts(&[&prefix]).unwrap();
        assert!(max_abs_diff(&p[0], &v[1]) < 1e-5);
    }
}

#[test]
fn max_seq_len_option_is_honoured_and_capped() {
    let dir = model_dir();
    let text = "word ".repeat(1000);
    let short = load(
        &dir,
        EmbedderOptions {
            max_seq_len: Some(16),
            ..EmbedderOptions::default()
        },
    );
    assert_eq!(short.max_seq_len(), 16);
    assert_eq!(short.token_counts(&[&text]).unwrap(), vec![16]);
    assert_ne!(
        short.model_id(),
        native().model_id(),
        "the limit changes the vectors"
    );
    let capped = load(
        &dir,
        EmbedderOptions {
            max_seq_len: Some(100_000),
            ..EmbedderOptions::default()
        },
    );
    assert_eq!(capped.max_seq_len(), 512, "max_position_embeddings");
    assert_eq!(capped.token_counts(&[&text]).unwrap(), vec![512]);
    assert_eq!(capped.embed_texts(&[&text]).unwrap()[0].len(), 384);
}

#[test]
fn invalid_options_are_errors() {
    let dir = model_dir();
    for options in [
        EmbedderOptions {
            batch_size: 0,
            ..EmbedderOptions::default()
        },
        EmbedderOptions {
            threads: Some(0),
            ..EmbedderOptions::default()
        },
        EmbedderOptions {
            max_seq_len: Some(2),
            ..EmbedderOptions::default()
        },
    ] {
        assert!(matches!(
            BertEmbedder::load(&dir, options),
            Err(Error::InvalidOption(_))
        ));
    }
}

/// A temporary model directory: every file of the real model linked (or copied), except those in
/// `replace`: `Some(bytes)` writes that content, `None` leaves the file out.
fn model_copy(replace: &[(&str, Option<&[u8]>)]) -> tempfile::TempDir {
    let src = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("1_Pooling")).unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ] {
        let dst = tmp.path().join(file);
        match replace.iter().find(|(name, _)| *name == file) {
            Some((_, Some(bytes))) => std::fs::write(&dst, bytes).unwrap(),
            Some((_, None)) => {}
            None => link(&src.join(file), &dst),
        }
    }
    tmp
}

#[cfg(unix)]
fn link(src: &Path, dst: &Path) {
    std::os::unix::fs::symlink(src, dst).unwrap();
}

#[cfg(not(unix))]
fn link(src: &Path, dst: &Path) {
    std::fs::copy(src, dst).unwrap();
}

fn edited_config(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let bytes = std::fs::read(model_dir().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn cls_pooling_is_read_from_the_model_directory() {
    let cls_config = br#"{
        "word_embedding_dimension": 384,
        "pooling_mode_cls_token": true,
        "pooling_mode_mean_tokens": false,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false
    }"#;
    let dir = model_copy(&[("1_Pooling/config.json", Some(cls_config))]);
    let text = "Failover to the secondary region took eleven minutes.";
    for backend in [Backend::Native, Backend::Candle] {
        let cls = load(
            dir.path(),
            EmbedderOptions {
                backend,
                ..EmbedderOptions::default()
            },
        );
        let mean = if backend == Backend::Native {
            native()
        } else {
            candle()
        };
        assert_eq!(cls.pooling(), Pooling::Cls);
        assert_ne!(cls.model_id(), mean.model_id());

        let v_cls = &cls.embed_texts(&[text]).unwrap()[0];
        let v_mean = &mean.embed_texts(&[text]).unwrap()[0];
        assert!(
            max_abs_diff(v_cls, v_mean) > 1e-2,
            "CLS and mean vectors differ"
        );

        // The hidden states are the model's (both backends agree on them), the CLS vector is
        // the first token's state normalised, and no other token's; the mean vector is the
        // normalised average of all of them.
        let states = cls.hidden_states(text).unwrap();
        let other = if backend == Backend::Native {
            candle()
        } else {
            native()
        };
        assert!(max_abs_diff(&states[0], &other.hidden_states(text).unwrap()[0]) < 1e-4);
        assert!(states.len() > 3);
        assert!(max_abs_diff(v_cls, &normalized(&states[0])) < 1e-5);
        for state in &states[1..] {
            assert!(max_abs_diff(v_cls, &normalized(state)) > 1e-2);
        }
        let mut avg = vec![0f32; 384];
        for state in &states {
            for (a, x) in avg.iter_mut().zip(state) {
                *a += x / states.len() as f32;
            }
        }
        assert!(max_abs_diff(v_mean, &normalized(&avg)) < 1e-5);
    }
}

fn load_err(dir: &Path) -> Error {
    match BertEmbedder::load(dir, EmbedderOptions::default()) {
        Ok(m) => panic!("{} loaded as {}", dir.display(), m.model_id()),
        Err(e) => e,
    }
}

#[test]
fn missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = load_err(&missing);
    assert!(
        matches!(err, Error::ModelDirMissing { ref dir } if *dir == missing),
        "{err:?}"
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(load_err(&file), Error::ModelDirMissing { .. }));
}

#[test]
fn missing_files_are_named() {
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "1_Pooling/config.json",
    ] {
        let dir = model_copy(&[(file, None)]);
        let err = load_err(dir.path());
        match &err {
            Error::MissingFile { dir: d, file: f } => {
                assert_eq!(d, dir.path());
                assert_eq!(*f, file);
            }
            other => panic!("{file}: {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(file) && msg.contains(&*dir.path().to_string_lossy()),
            "{msg}"
        );
    }
    // sentence_bert_config.json is optional: the limit falls back to 256.
    let dir = model_copy(&[("sentence_bert_config.json", None)]);
    let m = load(dir.path(), EmbedderOptions::default());
    assert_eq!(m.max_seq_len(), 256);
}

#[test]
fn non_bert_config_is_rejected() {
    let gpt2 = br#"{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
                    "vocab_size": 50257}"#;
    let dir = model_copy(&[("config.json", Some(gpt2))]);
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::UnsupportedModel { model_type: Some(ref t), .. } if t == "gpt2"),
        "{err:?}"
    );
    assert!(err.to_string().contains("gpt2"));

    let no_field = edited_config(|v| {
        v.as_object_mut().unwrap().remove("num_attention_heads");
    });
    let dir = model_copy(&[("config.json", Some(&no_field))]);
    let err = load_err(dir.path());
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(error_chain(&err).contains("num_attention_heads"));

    let dir = model_copy(&[("config.json", Some(b"{ not json"))]);
    assert!(matches!(load_err(dir.path()), Error::Config { .. }));
}

#[test]
fn hidden_size_mismatch_is_a_shape_error() {
    let wrong = edited_config(|v| v["hidden_size"] = 768.into());
    let pooling = br#"{"word_embedding_dimension": 768, "pooling_mode_mean_tokens": true}"#;
    let dir = model_copy(&[
        ("config.json", Some(&wrong)),
        ("1_Pooling/config.json", Some(pooling)),
    ]);
    for backend in [Backend::Native, Backend::Candle] {
        let err = BertEmbedder::load(
            dir.path(),
            EmbedderOptions {
                backend,
                ..EmbedderOptions::default()
            },
        )
        .unwrap_err();
        match &err {
            Error::TensorShape {
                expected, actual, ..
            } => {
                assert_eq!(expected[1], 768);
                assert_eq!(actual[1], 384);
            }
            other => panic!("{other:?}"),
        }
    }
    // Fewer layers in the weights than in the config: the first absent tensor is named.
    let more_layers = edited_config(|v| v["num_hidden_layers"] = 7.into());
    let dir = model_copy(&[("config.json", Some(&more_layers))]);
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::MissingTensor { ref name, .. } if name.contains("encoder.layer.6.")),
        "{err:?}"
    );
}

#[test]
fn corrupt_tokenizer_and_weights() {
    let dir = model_copy(&[("tokenizer.json", Some(b"\x00garbage{{{"))]);
    let err = load_err(dir.path());
    assert!(matches!(err, Error::Tokenizer { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"));

    let dir = model_copy(&[("tokenizer.json", Some(br#"{"version": "1.0"}"#))]);
    assert!(matches!(load_err(dir.path()), Error::Tokenizer { .. }));

    let dir = model_copy(&[(
        "model.safetensors",
        Some(b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
    )]);
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::Weights { .. } | Error::MissingTensor { .. }),
        "{err:?}"
    );
    let dir = model_copy(&[("model.safetensors", Some(b"garbage"))]);
    assert!(matches!(load_err(dir.path()), Error::Weights { .. }));

    let bad_pooling = br#"{"pooling_mode_max_tokens": true}"#;
    let dir = model_copy(&[("1_Pooling/config.json", Some(bad_pooling))]);
    assert!(matches!(load_err(dir.path()), Error::InvalidConfig { .. }));
}

/// The real model, counting what reaches it.
struct Counting<'a> {
    inner: &'a BertEmbedder,
    calls: AtomicUsize,
    texts: AtomicUsize,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a BertEmbedder) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            texts: AtomicUsize::new(0),
        }
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.calls.load(Ordering::SeqCst),
            self.texts.load(Ordering::SeqCst),
        )
    }
}

impl Embedder for Counting<'_> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.embed(texts)
    }
}

#[test]
fn cache_embeds_each_text_once() {
    let (a, b, c) = (
        "Paged the database team",
        "CPU throttling on the ingest pods",
        "Rolled back release 4.2",
    );
    let cached = CachedEmbedder::new(Counting::new(native()));
    assert_eq!(cached.model_id(), native().model_id());
    assert_eq!(cached.dimension(), 384);

    let first = cached.embed(&[a, b, a]).unwrap();
    assert_eq!(
        cached.inner().counts(),
        (1, 2),
        "a duplicate is embedded once"
    );
    assert_eq!(first[0], first[2]);
    assert_eq!(cached.len(), 2);

    let second = cached.embed(&[b, c]).unwrap();
    assert_eq!(cached.inner().counts(), (2, 3), "only the unseen text");
    assert_eq!(second[0], first[1], "identical vector from the cache");

    let third = cached.embed(&[c, b, a]).unwrap();
    assert_eq!(cached.inner().counts(), (2, 3), "all cached: no call");
    assert_eq!(
        third,
        vec![second[1].clone(), first[1].clone(), first[0].clone()]
    );
    assert!(cached.embed(&[]).unwrap().is_empty());

    // The cached vectors are the model's.
    for (text, v) in [(a, &first[0]), (b, &first[1]), (c, &second[1])] {
        assert!(max_abs_diff(v, &native().embed_texts(&[text]).unwrap()[0]) < 1e-5);
    }
}

#[test]
fn cache_save_load_round_trip() {
    let texts = [
        "Synthetic checks failed in eu-west-1",
        "",
        "Increased the pool size",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("embeddings.cache");

    let cached = CachedEmbedder::load(Counting::new(native()), &file).unwrap();
    assert!(cached.is_empty(), "a missing file is an empty cache");
    let before = cached.embed(&texts).unwrap();
    cached.save(&file).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");

    let reloaded = CachedEmbedder::load(Counting::new(native()), &file).unwrap();
    assert_eq!(reloaded.len(), 3);
    let after = reloaded.embed(&texts).unwrap();
    assert_eq!(after, before, "bit-identical after the round trip");
    assert_eq!(reloaded.inner().counts(), (0, 0), "nothing re-embedded");

    // Saving again over the existing file works and keeps the content.
    reloaded.save(&file).unwrap();
    let again = CachedEmbedder::load(Counting::new(native()), &file).unwrap();
    assert_eq!(again.embed(&texts).unwrap(), before);

    // Another model (another pooling, hence another id) refuses the file.
    let cls_config = br#"{"pooling_mode_cls_token": true}"#;
    let dir = model_copy(&[("1_Pooling/config.json", Some(cls_config))]);
    let other = load(dir.path(), EmbedderOptions::default());
    let err = CachedEmbedder::load(Counting::new(&other), &file)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::CacheModelMismatch { .. }), "{err:?}");

    // A damaged file is an error, not an empty cache.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let err = CachedEmbedder::load(Counting::new(native()), &file)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::CacheFormat { .. }), "{err:?}");
}

#[test]
fn input_without_tokens_embeds_to_zeros() {
    // A tokenizer without a post-processor adds no [CLS]/[SEP]: the empty text has no tokens,
    // which the Embedder contract maps to an all-zero vector.
    let bytes = std::fs::read(model_dir().join("tokenizer.json")).unwrap();
    let mut tokenizer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    tokenizer["post_processor"] = serde_json::Value::Null;
    let tokenizer = serde_json::to_vec(&tokenizer).unwrap();
    let cls = br#"{"pooling_mode_cls_token": true}"#;
    for pooling in [None, Some(&cls[..])] {
        let mut replace = vec![("tokenizer.json", Some(&tokenizer[..]))];
        if let Some(p) = pooling {
            replace.push(("1_Pooling/config.json", Some(p)));
        }
        let dir = model_copy(&replace);
        for backend in [Backend::Native, Backend::Candle] {
            let m = load(
                dir.path(),
                EmbedderOptions {
                    backend,
                    ..EmbedderOptions::default()
                },
            );
            assert_eq!(m.token_counts(&["", "disk full"]).unwrap(), vec![0, 2]);
            for texts in [&["", "disk full"][..], &[""][..]] {
                let v = m.embed_texts(texts).unwrap();
                assert_eq!(v[0], vec![0.0; 384], "{backend:?} {:?}", m.pooling());
                if texts.len() > 1 {
                    let norm = v[1].iter().map(|x| x * x).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-5);
                }
            }
            assert!(m.hidden_states("").unwrap().is_empty());
        }
    }
}

#[test]
fn model_id_comes_from_content_not_folder() {
    // A byte-identical copy under another name is the same model.
    let copy = model_copy(&[]);
    let elsewhere = BertEmbedder::load(copy.path(), EmbedderOptions::default()).unwrap();
    assert!(!copy.path().ends_with("all-MiniLM-L6-v2"));
    assert_eq!(elsewhere.model_id(), native().model_id());
}

/// bf16 against the f32 reference, for each bf16 kernel this CPU has: the vectors of the
/// tests' texts (every length, the empty text, one past the token limit), in one batch and one
/// at a time, keep a cosine of at
/// least 0.999, and the model id says bf16.
#[test]
fn bf16_matches_f32_on_every_kernel_this_cpu_has() {
    let available = BertEmbedder::bf16_kernels_available();
    for (precision, kernel) in [
        (Precision::Bf16, available.first().copied()),
        (
            Precision::Bf16Avx512,
            available.contains(&"avx512-bf16").then_some("avx512-bf16"),
        ),
    ] {
        let Some(kernel) = kernel else {
            eprintln!(
                "skipped {precision:?}: this CPU has no {precision:?} kernel (has {available:?})"
            );
            let err = BertEmbedder::load(
                &model_dir(),
                EmbedderOptions {
                    precision,
                    ..EmbedderOptions::default()
                },
            )
            .unwrap_err();
            assert!(matches!(err, Error::InvalidOption(_)), "{err}");
            continue;
        };
        let m = load(
            &model_dir(),
            EmbedderOptions {
                precision,
                ..EmbedderOptions::default()
            },
        );
        assert_eq!(m.precision(), Precision::Bf16);
        assert!(m.cpu_kernels().ends_with(kernel), "{}", m.cpu_kernels());
        assert_eq!(m.model_id(), format!("{}+bf16", native().model_id()));
        let mut texts = mixed_texts();
        texts.extend(
            [
                "The weather is lovely today.",
                "It's so sunny outside!",
                "He drove to the stadium.",
            ]
            .map(String::from),
        );
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let want = native().embed_texts(&texts).unwrap();
        // One batch, one by one, and a single query (the column-split path).
        let got = m.embed_texts(&texts).unwrap();
        let mut min = f32::INFINITY;
        for (i, (text, (g, w))) in texts.iter().zip(got.iter().zip(&want)).enumerate() {
            let one = m.embed_texts(&[text]).unwrap().remove(0);
            let c = cosine(g, w).min(cosine(&one, w));
            assert!(c >= 0.999, "{kernel} text {i}: cosine {c} to f32");
            min = min.min(c);
        }
        assert!(min.is_finite());
        eprintln!(
            "{kernel}: min cosine to f32 {min:.6} over {} texts",
            texts.len()
        );
    }
}

#[test]
fn precision_is_part_of_the_options() {
    assert_eq!(EmbedderOptions::default().precision, Precision::F32);
    for (s, p) in [
        ("auto", Precision::Auto),
        ("f32", Precision::F32),
        ("bf16", Precision::Bf16),
        ("bf16-avx512", Precision::Bf16Avx512),
    ] {
        assert_eq!(Precision::parse(s), Some(p));
    }
    assert_eq!(Precision::parse("int8"), None);
    let auto = load(
        &model_dir(),
        EmbedderOptions {
            precision: Precision::Auto,
            ..EmbedderOptions::default()
        },
    );
    // Auto is bf16 exactly where AMX is there.
    let amx = BertEmbedder::bf16_kernels_available().contains(&"amx-bf16");
    assert_eq!(auto.precision() == Precision::Bf16, amx);
    assert_eq!(auto.model_id().ends_with("+bf16"), amx);
    let err = BertEmbedder::load(
        &model_dir(),
        EmbedderOptions {
            backend: Backend::Candle,
            precision: Precision::Bf16,
            ..EmbedderOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}
