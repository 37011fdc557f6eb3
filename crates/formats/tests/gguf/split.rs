//! Split models: the three-file fixture gguf-py wrote, and broken sets.

use std::path::Path;

use frugal_formats::gguf::{GgufError, GgufModel};
use frugal_formats::TensorSource;

use super::support::{fixture, Builder};

fn copy_splits(dir: &Path, prefix: &str, count: usize, which: &[usize]) {
    for &i in which {
        let from = fixture(&format!("split-{i:05}-of-00003.gguf"));
        std::fs::copy(
            from,
            dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf")),
        )
        .expect("copy");
    }
}

#[test]
fn opens_all_splits_from_any_of_them() {
    for i in 1..=3 {
        let calls = std::cell::RefCell::new(vec![]);
        let path = fixture(&format!("split-{i:05}-of-00003.gguf"));
        let m = GgufModel::open_with_progress(&path, &|done, total| {
            calls.borrow_mut().push((done, total))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls.into_inner(), [(1, 3), (2, 3), (3, 3)]);
        assert_eq!(m.files().len(), 3);
        assert_eq!(m.architecture(), Some("testarch"));
        assert_eq!(m.metadata().get_u64("testarch.block_count"), Some(3));
        let names: Vec<String> = m.tensor_infos().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["blk.0.w", "blk.1.w", "blk.2.w"]);
        let t = m.tensor("blk.2.w").expect("tensor of the third split");
        assert_eq!(t.shape, [3]);
        assert_eq!(t.data, [3.0f32.to_le_bytes(); 3].concat());
        let t = m.tensor("blk.1.w").expect("tensor of the second split");
        assert_eq!((t.shape.as_slice(), t.data.len()), (&[2, 4][..], 16));
    }
}

#[test]
fn a_plain_file_is_a_one_file_model() {
    let m = GgufModel::open(fixture("all_types.gguf")).expect("opens");
    assert_eq!(m.files().len(), 1);
    assert_eq!(m.tensor_infos().len(), 7);
}

#[test]
fn missing_split_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_splits(dir.path(), "m", 3, &[1, 3]);
    let e = GgufModel::open(dir.path().join("m-00001-of-00003.gguf")).expect_err("split 2 missing");
    assert!(
        matches!(
            e,
            GgufError::MissingSplit {
                index: 2,
                count: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("m-00002-of-00003.gguf"), "{e}");
}

#[test]
fn split_keys_must_agree_with_names() {
    // Files whose split.count says 3, named as a set of 2.
    let dir = tempfile::tempdir().expect("temp dir");
    copy_splits(dir.path(), "m", 2, &[1, 2]);
    let e = GgufModel::open(dir.path().join("m-00002-of-00002.gguf")).expect_err("count mismatch");
    assert!(
        matches!(
            e,
            GgufError::SplitMismatch {
                key: "split.count",
                ..
            }
        ),
        "{e}"
    );

    // A split renamed to a plain name cannot find its siblings.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        fixture("split-00001-of-00003.gguf"),
        dir.path().join("model.gguf"),
    )
    .expect("copy");
    let e = GgufModel::open(dir.path().join("model.gguf")).expect_err("renamed split");
    assert!(
        matches!(
            e,
            GgufError::SplitMismatch {
                key: "split.count",
                ..
            }
        ),
        "{e}"
    );
}

fn write_split(dir: &Path, i: u16, count: u16, total: i32, tensors: &[&str]) {
    let mut b = Builder::new()
        .kv_u16("split.no", i)
        .kv_u16("split.count", count)
        .kv_i32("split.tensors.count", total);
    for t in tensors {
        b = b.tensor(t, &[1], 0, &[0; 4]);
    }
    std::fs::write(
        dir.join(format!("x-{:05}-of-{count:05}.gguf", i + 1)),
        b.build(),
    )
    .expect("write");
}

#[test]
fn tensor_counts_and_duplicates_across_splits() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_split(dir.path(), 0, 2, 3, &["a"]);
    write_split(dir.path(), 1, 2, 3, &["b"]);
    let e = GgufModel::open(dir.path().join("x-00001-of-00002.gguf"))
        .expect_err("2 tensors, 3 claimed");
    assert!(
        matches!(
            e,
            GgufError::SplitTensorCount {
                expected: 3,
                found: 2
            }
        ),
        "{e}"
    );

    write_split(dir.path(), 0, 2, 2, &["a"]);
    write_split(dir.path(), 1, 2, 2, &["a"]);
    let e = GgufModel::open(dir.path().join("x-00001-of-00002.gguf")).expect_err("duplicate");
    assert!(
        matches!(e, GgufError::DuplicateTensorAcrossSplits { ref name, .. } if name == "a"),
        "{e}"
    );

    write_split(dir.path(), 1, 2, 2, &["b"]);
    write_split(dir.path(), 0, 2, 2, &["a"]);
    std::fs::rename(
        dir.path().join("x-00001-of-00002.gguf"),
        dir.path().join("tmp"),
    )
    .expect("rename");
    std::fs::rename(
        dir.path().join("x-00002-of-00002.gguf"),
        dir.path().join("x-00001-of-00002.gguf"),
    )
    .expect("rename");
    std::fs::rename(
        dir.path().join("tmp"),
        dir.path().join("x-00002-of-00002.gguf"),
    )
    .expect("rename");
    let e = GgufModel::open(dir.path().join("x-00001-of-00002.gguf")).expect_err("swapped");
    assert!(
        matches!(
            e,
            GgufError::SplitMismatch {
                key: "split.no",
                ..
            }
        ),
        "{e}"
    );
}
