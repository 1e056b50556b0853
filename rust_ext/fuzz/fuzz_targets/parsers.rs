//! Coverage-guided fuzzing of the engine's JSONL, gzip and CSV readers, with libFuzzer seeing the
//! Rust code itself (the atheris target in `fuzz/` drives the same readers from Python, where the
//! coverage it sees is Python's).
//!
//! The first byte picks the format, the rest is the file. Any input must end as rows and rejects
//! that account for every record, or as `Error::Invalid` for a file that cannot be read at all; a
//! panic, or records lost, stops the fuzzer with the input. How to run it: `make fuzz-rust`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use _native::engine::{convert, Error, Options};
use libfuzzer_sys::fuzz_target;

const FORMATS: [&str; 3] = ["jsonl", "jsonl.gz", "csv"];

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory").keep())
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let format = FORMATS[pick as usize % FORMATS.len()];
    let input = dir().join(format!("input.{format}"));
    std::fs::write(&input, body).expect("the input is written");
    let options = Options {
        dims: 3,
        default_model: "m".into(),
        raw_limit: 64,
        batch_id: "fuzz".into(),
        ingested_at: 0,
        row_group_rows: 4,
        zstd_level: 1,
        threads: 1,
    };
    match convert(
        &input,
        format,
        None,
        &dir().join("out"),
        &dir().join("rejects.parquet"),
        &options,
    ) {
        Ok(summary) => assert_eq!(
            summary.rows_in,
            summary.rows_good + summary.rows_rejected,
            "records lost: {summary:?}"
        ),
        Err(Error::Invalid(_)) => {}
        Err(Error::Io(message)) => panic!("I/O error on a fuzz input: {message}"),
    }
});
