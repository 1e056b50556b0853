//! The conversion pipeline: one streaming pass from a landing file to Parquet files laid out for the
//! Iceberg table, plus the rejected records.
//!
//! ```text
//! reader thread ──blocks──► parse workers (N) ──chunks──► sequencer (record order: duplicates,
//!  (file, gzip, CSV,           (JSON/number parsing,        day split, row groups, rejects)
//!   NPY, Parquet)               validation, norms)                 │ full row groups
//!                                                                  ▼
//!                                                     writer thread (Parquet encode + zstd)
//! ```
//! Every channel is bounded, so memory is bounded by a few blocks and about one row group of raw
//! rows, whatever the size of the input; encoded pages wait for the writer in unnamed temporary
//! files beside the output (see `vector_column`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use arrow::array::{
    ArrayRef, Float32Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use crossbeam_channel::{bounded, Receiver, Sender};
use hashbrown::HashSet;

use crate::formats::{self, Block, Work};
use crate::record::{civil_from_days, Reason, Reject};
use crate::writer::{self, DayWriter, EncodedRowGroup, RejectsWriter, RowGroupEncoder};

pub const DAY_MICROS: i64 = 86_400_000_000;

/// How to convert; everything the contract and the table layout need.
#[derive(Debug, Clone)]
pub struct Options {
    pub dims: usize,
    pub default_model: String,
    /// Characters of a rejected record kept in `raw`.
    pub raw_limit: usize,
    pub batch_id: String,
    /// `ingested_at` and `quarantined_at`, microseconds since the epoch.
    pub ingested_at: i64,
    pub row_group_rows: usize,
    pub zstd_level: i32,
    /// Parse workers (0: one per core).
    pub threads: usize,
}

/// One Parquet file written for the table: all its rows share one `day(ts)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    pub path: PathBuf,
    pub day: String,
    pub rows: u64,
    pub bytes: u64,
}

/// What a conversion produced.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub rows_in: u64,
    pub rows_good: u64,
    pub rows_rejected: u64,
    pub reasons: BTreeMap<&'static str, u64>,
    pub data_files: Vec<DataFile>,
    pub rejects_path: Option<PathBuf>,
    pub norm_min: f64,
    pub norm_max: f64,
    pub norm_sum: f64,
}

/// A landing file that cannot be converted at all (as opposed to records that are rejected).
#[derive(Debug)]
pub enum Error {
    /// The input is not a file of the declared format (names the file and what is wrong).
    Invalid(String),
    /// Reading the input or writing the output failed.
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(m) | Error::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Io(format!("parquet: {e}"))
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Io(format!("arrow: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The good rows' floats of a chunk (its `mapped` block, or else its `vectors`), row-major.
fn floats<'a>(mapped: &'a Option<Block>, vectors: &'a [f32]) -> &'a [f32] {
    match mapped {
        Some(block) => bytemuck::cast_slice(block),
        None => vectors,
    }
}

/// Good rows of one chunk, columnar, plus what was rejected in it. Rows are in record order.
#[derive(Default)]
pub struct Chunk {
    pub seq: u64,
    pub rows_in: u64,
    pub index: Vec<u64>,
    pub ids: Vec<String>,
    pub models: Vec<Option<String>>,
    pub ts: Vec<i64>,
    pub sources: Vec<Option<String>>,
    pub payloads: Vec<Option<String>>,
    pub vectors: Vec<f32>,
    /// The good rows' floats where they lie in a mapped input file, instead of `vectors`.
    pub mapped: Option<Block>,
    pub norms: Vec<f64>,
    /// Raw text of each good row, kept only to quarantine a later duplicate.
    pub raws: Raws,
    pub rejects: Vec<Reject>,
    /// The input stopped being readable here: the record index and why.
    pub unreadable: Option<(u64, String)>,
    /// Record indices count from the chunk's first record, whose own index the reader could not
    /// know (CSV blocks are cut by bytes): the sequencer adds the records of the chunks before.
    pub relative: bool,
    /// Records the chunk spans (with `relative`).
    pub records: u64,
}

/// The raw text of a chunk's good rows, held in the cheapest form the format allows.
#[derive(Default)]
pub enum Raws {
    #[default]
    None,
    /// Byte ranges into the block of lines the chunk was parsed from.
    Text(Block, Vec<(u32, u32)>),
    /// One string per good row.
    Strings(Vec<String>),
    /// Byte ranges of the good rows' CSV records in the block they were parsed from.
    CsvText(Block, Vec<(u32, u32)>),
}

impl Chunk {
    /// The input block the chunk was parsed from, emptied, for the reader to fill again.
    fn into_block(self) -> Vec<u8> {
        if let Some(block) = self.mapped {
            block.recycle();
        }
        match self.raws {
            Raws::Text(data, _) | Raws::CsvText(data, _) => data.recycle(),
            _ => Vec::new(),
        }
    }

    fn raw(&self, row: usize, limit: usize) -> String {
        let text: std::borrow::Cow<str> = match &self.raws {
            Raws::None => "".into(),
            Raws::Text(data, ranges) => {
                let (a, b) = ranges[row];
                String::from_utf8_lossy(&data[a as usize..b as usize])
            }
            Raws::Strings(s) => s[row].as_str().into(),
            Raws::CsvText(data, ranges) => {
                let (a, b) = ranges[row];
                crate::formats::csv_record_raw(&data[a as usize..b as usize]).into()
            }
        };
        truncate_chars(&text, limit)
    }
}

pub fn truncate_chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// Keeps freed memory of a few MiB in the process. By default glibc hands such blocks straight back
/// to the kernel (they are mmapped, or trimmed off the heap), so every read block, slab and page
/// buffer of a conversion faults in fresh zeroed pages: that was a third of the kernel time. Set
/// once per process; the heap keeps at most `M_TRIM_THRESHOLD` of free memory.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters; it takes the allocator's own locks.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            }
        });
    }
}

/// Converts `input` (of `format`) into Parquet files under `out_dir` (one per day, named
/// `ts_day=YYYY-MM-DD/<batch_id>.parquet`) and the rejects into `rejects_path`.
pub fn convert(
    input: &Path,
    format: &str,
    sidecar: Option<&Path>,
    out_dir: &Path,
    rejects_path: &Path,
    options: &Options,
) -> Result<Summary> {
    let format = formats::Format::parse(format)?;
    let source = formats::open(input, format, sidecar, options)?;
    keep_freed_memory();
    let threads = if options.threads == 0 {
        thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        options.threads
    };
    let (work_tx, work_rx) = bounded::<Work>(threads * 2);
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(threads * 2);
    let (encoded_tx, encoded_rx) = bounded::<Encoded>(threads);
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::Io(format!("cannot create {}: {e}", out_dir.display())))?;
    let encoder = RowGroupEncoder::new(options, out_dir)?;
    // Blocks in flight, from the reader to the sequencer. The channels alone do not bound them: a
    // slow worker holding block N lets the others run ahead, and their chunks wait in the
    // sequencer until N arrives. The reader takes a slot per block, the sequencer gives it back.
    let in_flight = threads * 3;
    // A slot carries a block buffer back, so the reader refills warm memory instead of faulting
    // in fresh pages for every block.
    let (slot_tx, slot_rx) = bounded::<Vec<u8>>(in_flight);
    for _ in 0..in_flight {
        slot_tx.send(Vec::new()).expect("the slot channel has room");
    }
    let options = Arc::new(options.clone());

    thread::scope(|scope| {
        let reader = scope.spawn(move || source.run(work_tx, slot_rx));
        let mut workers = Vec::new();
        for _ in 0..threads {
            let rx = work_rx.clone();
            let tx = chunk_tx.clone();
            let options = Arc::clone(&options);
            workers.push(scope.spawn(move || parse_worker(rx, tx, &options)));
        }
        drop(chunk_tx);
        drop(work_rx);
        let out_dir = out_dir.to_path_buf();
        let writer_options = Arc::clone(&options);
        let writer = scope.spawn(move || write_days(encoded_rx, &out_dir, &writer_options));
        let groups = RowGroups {
            scope,
            encoder: &encoder,
            appender: encoded_tx,
            options: &options,
            threads,
            open: HashMap::new(),
            numbers: HashMap::new(),
            closing: Default::default(),
            buffered: 0,
        };
        let sequenced = sequence(chunk_rx, groups, slot_tx, rejects_path, &options);
        // Join everything before reporting, so no thread outlives a failure.
        let read = reader.join().expect("reader thread panicked");
        for w in workers {
            w.join().expect("parse worker panicked");
        }
        let files = writer.join().expect("writer thread panicked");
        read?;
        let mut summary = sequenced?;
        summary.data_files = files?;
        Ok(summary)
    })
}

fn parse_worker(rx: Receiver<Work>, tx: Sender<Chunk>, options: &Options) {
    for work in rx {
        let chunk = formats::parse(work, options);
        if tx.send(chunk).is_err() {
            return;
        }
    }
}

/// Rows per slab of a day's buffer: one allocation per column, freed by the encoder as soon as
/// it is encoded.
const SLAB_ROWS: usize = 2048;

/// Good rows of one day, columnar, filling one slab.
#[derive(Default)]
struct Slab {
    ids: Vec<String>,
    models: Vec<String>,
    ts: Vec<i64>,
    sources: Vec<Option<String>>,
    payloads: Vec<Option<String>>,
    vectors: Vec<f32>,
}

impl Slab {
    fn len(&self) -> usize {
        self.ts.len()
    }

    fn into_batch(self, options: &Options) -> Result<RecordBatch> {
        let n = self.ts.len();
        let dims = options.dims as i32;
        let offsets = OffsetBuffer::new(ScalarBuffer::from(
            (0..=n as i32).map(|i| i * dims).collect::<Vec<_>>(),
        ));
        let values = Float32Array::from(self.vectors);
        let vector = ListArray::try_new(writer::vector_element(), offsets, Arc::new(values), None)?;
        let ts = TimestampMicrosecondArray::from(self.ts).with_timezone("UTC");
        let ingested =
            TimestampMicrosecondArray::from(vec![options.ingested_at; n]).with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.ids)),
            Arc::new(StringArray::from(self.models)),
            Arc::new(vector),
            Arc::new(ts),
            Arc::new(StringArray::from(self.sources)),
            Arc::new(StringArray::from(self.payloads)),
            Arc::new(StringArray::from(vec![options.batch_id.as_str(); n])),
            Arc::new(ingested),
        ];
        Ok(RecordBatch::try_new(writer::embeddings_schema(), columns)?)
    }
}

/// An encoded row group (or why it could not be encoded), for the appender: its day and its
/// number among that day's row groups.
type Encoded = (i64, u64, Result<EncodedRowGroup>);

/// The row group a day is filling: the slab being filled, and the thread that encodes the full
/// slabs as they come (started with the first one).
struct OpenGroup<'scope> {
    number: u64,
    rows: usize,
    slab: Slab,
    encoding: Option<(Sender<RecordBatch>, thread::ScopedJoinHandle<'scope, ()>)>,
}

/// The open row groups, one per day. Each is encoded on its own thread while it fills, so the
/// cores compress pages from the first slab on rather than once a whole row group is buffered;
/// a closed one finishes on its thread, at most `threads` of them at once, and goes to the
/// appender. Rows held (raw in the open slabs and queues, or encoded) stay within about one row
/// group open plus one per core closing.
struct RowGroups<'scope, 'env> {
    scope: &'scope thread::Scope<'scope, 'env>,
    encoder: &'env RowGroupEncoder,
    appender: Sender<Encoded>,
    options: &'env Options,
    threads: usize,
    open: HashMap<i64, OpenGroup<'scope>>,
    numbers: HashMap<i64, u64>,
    closing: std::collections::VecDeque<thread::ScopedJoinHandle<'scope, ()>>,
    /// Rows in the open groups.
    buffered: usize,
}

impl<'scope, 'env> RowGroups<'scope, 'env> {
    fn push(
        &mut self,
        day: i64,
        row: (String, String, i64, Option<String>, Option<String>),
        vector: &[f32],
    ) -> Result<()> {
        let options = self.options;
        let slab_rows = SLAB_ROWS.min(options.row_group_rows.max(1));
        let group = match self.open.entry(day) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let number = self.numbers.entry(day).or_default();
                *number += 1;
                e.insert(OpenGroup {
                    number: *number - 1,
                    rows: 0,
                    slab: Slab::default(),
                    encoding: None,
                })
            }
        };
        let slab = &mut group.slab;
        if slab.vectors.capacity() == 0 {
            slab.vectors.reserve_exact(slab_rows * options.dims);
        }
        let (id, model, ts, source, payload) = row;
        slab.ids.push(id);
        slab.models.push(model);
        slab.ts.push(ts);
        slab.sources.push(source);
        slab.payloads.push(payload);
        slab.vectors.extend_from_slice(vector);
        group.rows += 1;
        self.buffered += 1;
        if slab.len() >= slab_rows {
            let full = std::mem::take(slab).into_batch(options)?;
            let (scope, encoder, appender) = (self.scope, self.encoder, &self.appender);
            let (slabs, _) = group
                .encoding
                .get_or_insert_with(|| start_encoding(scope, encoder, appender, day, group.number));
            // A failed encoder has reported its error to the appender already.
            let _ = slabs.send(full);
        }
        if group.rows >= options.row_group_rows {
            self.close(day)?;
        }
        Ok(())
    }

    /// With many days open at once, closes the largest groups early, so that about one row
    /// group's rows are open in all (checked once per chunk, as rows arrive a chunk at a time).
    fn balance(&mut self) -> Result<()> {
        while self.buffered > self.options.row_group_rows {
            let (&day, _) = self
                .open
                .iter()
                .max_by_key(|(_, g)| g.rows)
                .expect("rows are buffered");
            self.close(day)?;
        }
        Ok(())
    }

    /// Closes the day's row group: its last rows go to its encoder, which finishes on its own.
    fn close(&mut self, day: i64) -> Result<()> {
        let Some(mut group) = self.open.remove(&day) else {
            return Ok(());
        };
        self.buffered -= group.rows;
        let (scope, encoder, appender) = (self.scope, self.encoder, &self.appender);
        let (slabs, handle) = group
            .encoding
            .take()
            .unwrap_or_else(|| start_encoding(scope, encoder, appender, day, group.number));
        if group.slab.len() > 0 {
            let _ = slabs.send(std::mem::take(&mut group.slab).into_batch(self.options)?);
        }
        drop(slabs);
        self.closing.push_back(handle);
        // Bound the row groups still encoding after their close (and so the memory they hold).
        while self.closing.len() > self.threads {
            let oldest = self.closing.pop_front().expect("one is closing");
            oldest.join().expect("row group encoder panicked");
        }
        Ok(())
    }

    /// Closes every open row group, in day order.
    fn finish(mut self) -> Result<()> {
        let mut days: Vec<i64> = self.open.keys().copied().collect();
        days.sort_unstable();
        for day in days {
            self.close(day)?;
        }
        Ok(())
    }
}

/// Starts the thread that encodes one row group's slabs as they are sent, then hands the encoded
/// row group (or its error) to the appender.
fn start_encoding<'scope, 'env>(
    scope: &'scope thread::Scope<'scope, 'env>,
    encoder: &'env RowGroupEncoder,
    appender: &Sender<Encoded>,
    day: i64,
    number: u64,
) -> (Sender<RecordBatch>, thread::ScopedJoinHandle<'scope, ()>) {
    // Unbounded: what an open group holds is bounded by the sequencer's row count instead.
    let (tx, rx) = crossbeam_channel::unbounded::<RecordBatch>();
    let appender = appender.clone();
    let handle = scope.spawn(move || {
        let encoded = encoder.start().and_then(|mut group| {
            for slab in rx {
                group.write(&slab)?;
            }
            group.finish()
        });
        let _ = appender.send((day, number, encoded));
    });
    (tx, handle)
}

/// Takes chunks in record order: drops duplicate keys, splits rows by day into row groups, writes
/// the rejects.
fn sequence(
    rx: Receiver<Chunk>,
    mut groups: RowGroups,
    slots: Sender<Vec<u8>>,
    rejects_path: &Path,
    options: &Options,
) -> Result<Summary> {
    let mut pending: BTreeMap<u64, Chunk> = BTreeMap::new();
    let mut next = 0u64;
    let mut seen: HashSet<Box<[u8]>> = HashSet::new();
    let mut rejects = RejectsWriter::new(rejects_path, options);
    let mut summary = Summary {
        norm_min: f64::INFINITY,
        norm_max: f64::NEG_INFINITY,
        ..Summary::default()
    };
    let mut stopped = false;
    let mut key = Vec::new();
    let mut base_index = 0u64;
    for chunk in rx {
        pending.insert(chunk.seq, chunk);
        while let Some(mut chunk) = pending.remove(&next) {
            next += 1;
            if stopped {
                // The reader may go on (it is gone once the input ended).
                let _ = slots.try_send(chunk.into_block());
                continue; // everything after an unreadable point is gone; drain the pipeline
            }
            if chunk.relative {
                for index in &mut chunk.index {
                    *index += base_index;
                }
                for reject in &mut chunk.rejects {
                    reject.index += base_index;
                }
                if let Some((index, _)) = &mut chunk.unreadable {
                    *index += base_index;
                }
                base_index += chunk.records;
            }
            summary.rows_in += chunk.rows_in;
            let mut chunk_rejects = std::mem::take(&mut chunk.rejects);
            let floats = floats(&chunk.mapped, &chunk.vectors);
            for row in 0..chunk.ids.len() {
                let model = chunk.models[row]
                    .take()
                    .unwrap_or_else(|| options.default_model.clone());
                key.clear();
                key.extend_from_slice(chunk.ids[row].as_bytes());
                key.push(0);
                key.extend_from_slice(model.as_bytes());
                key.push(0);
                key.extend_from_slice(&chunk.ts[row].to_le_bytes());
                if !seen.insert(key.as_slice().into()) {
                    chunk_rejects.push(Reject {
                        index: chunk.index[row],
                        reason: Reason::DuplicateKey,
                        detail: format!(
                            "(id, model, ts) repeats an earlier record: ({:?}, {:?})",
                            chunk.ids[row], model
                        ),
                        raw: chunk.raw(row, options.raw_limit),
                    });
                    continue;
                }
                let norm = chunk.norms[row];
                summary.norm_min = summary.norm_min.min(norm);
                summary.norm_max = summary.norm_max.max(norm);
                summary.norm_sum += norm;
                summary.rows_good += 1;
                let day = chunk.ts[row].div_euclid(DAY_MICROS);
                let d = options.dims;
                groups.push(
                    day,
                    (
                        std::mem::take(&mut chunk.ids[row]),
                        model,
                        chunk.ts[row],
                        chunk.sources[row].take(),
                        chunk.payloads[row].take(),
                    ),
                    &floats[row * d..(row + 1) * d],
                )?;
            }
            groups.balance()?;
            if let Some((index, why)) = chunk.unreadable.take() {
                summary.rows_in += 1;
                chunk_rejects.push(Reject {
                    index,
                    reason: Reason::UnreadableFile,
                    detail: format!("file cannot be read past this point: {why}"),
                    raw: String::new(),
                });
                stopped = true;
            }
            chunk_rejects.sort_by_key(|r| r.index);
            for r in &chunk_rejects {
                *summary.reasons.entry(r.reason.code()).or_default() += 1;
            }
            summary.rows_rejected += chunk_rejects.len() as u64;
            rejects.write(chunk_rejects)?;
            let _ = slots.try_send(chunk.into_block());
        }
    }
    groups.finish()?;
    summary.rejects_path = rejects.finish()?;
    if summary.rows_good == 0 {
        summary.norm_min = f64::NAN;
        summary.norm_max = f64::NAN;
    }
    Ok(summary)
}

/// Appends encoded row groups to one Parquet file per day, each day's in the order they were
/// opened; returns the files, sorted by day.
fn write_days(rx: Receiver<Encoded>, out_dir: &Path, options: &Options) -> Result<Vec<DataFile>> {
    let mut open: BTreeMap<i64, DayWriter> = BTreeMap::new();
    let mut waiting = BTreeMap::new();
    let mut next: HashMap<i64, u64> = HashMap::new();
    let mut failure = None;
    for (day, number, group) in rx {
        if failure.is_some() {
            continue; // keep draining so no encoder blocks on a dead writer
        }
        waiting.insert((day, number), group);
        let next = next.entry(day).or_default();
        while let Some(group) = waiting.remove(&(day, *next)) {
            *next += 1;
            let result = group.and_then(|group| match open.entry(day) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().append(group),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let label = civil_from_days(day);
                    let path = out_dir
                        .join(format!("ts_day={label}"))
                        .join(format!("{}.parquet", options.batch_id));
                    DayWriter::create(&path, label, options).and_then(|w| e.insert(w).append(group))
                }
            });
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    open.into_values().map(DayWriter::finish).collect()
}

/// Record counts of a landing file without converting it: `(records, damaged)` where `damaged`
/// says why reading stopped early (a broken compressed stream). Counts what the contract counts:
/// non-blank lines for JSONL, data rows for CSV, vectors for NPY, rows for Parquet.
pub fn count_records(
    input: &Path,
    format: &str,
    sidecar: Option<&Path>,
) -> Result<(u64, Option<String>)> {
    formats::count(input, formats::Format::parse(format)?, sidecar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use std::fs::File;
    use std::io::Write;

    fn options(dims: usize) -> Options {
        Options {
            dims,
            default_model: "m".into(),
            raw_limit: 100,
            batch_id: "b1".into(),
            ingested_at: 0,
            row_group_rows: 2,
            zstd_level: 1,
            threads: 2,
        }
    }

    fn read_back(path: &Path) -> Vec<RecordBatch> {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
    }

    #[test]
    fn jsonl_rows_split_by_day_with_rejects_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let mut f = File::create(&input).unwrap();
        let day = 86_400_000i64;
        writeln!(f, r#"{{"id":"a","vector":[1,2],"ts":0,"extra":1}}"#).unwrap();
        writeln!(f, r#"{{"id":"b","vector":[3,4],"ts":{day}}}"#).unwrap();
        writeln!(f).unwrap();
        writeln!(f, r#"{{"id":"a","vector":[5,6],"ts":0}}"#).unwrap(); // duplicate of line 0
        writeln!(f, r#"{{"id":"c","vector":[1],"ts":0}}"#).unwrap(); // wrong dimension
        writeln!(f, r#"{{"id":"d","vector":[1e39,0],"ts":0}}"#).unwrap(); // inf as float32
        writeln!(f, "not json").unwrap();
        write!(
            f,
            r#"{{"id":"e","vector":[0,1],"ts":"1970-01-01T00:00:00Z","model":"x"}}"#
        )
        .unwrap();
        drop(f);
        let out = dir.path().join("out");
        let rejects = dir.path().join("rejects.parquet");
        let s = convert(&input, "jsonl", None, &out, &rejects, &options(2)).unwrap();
        assert_eq!((s.rows_in, s.rows_good, s.rows_rejected), (7, 3, 4));
        assert_eq!(s.data_files.len(), 2);
        assert_eq!(s.data_files[0].day, "1970-01-01");
        assert_eq!(s.data_files[0].rows, 2);
        let first = read_back(&s.data_files[0].path);
        let ids: Vec<&str> = first
            .iter()
            .flat_map(|b| b.column(0).as_string::<i32>().iter().map(|v| v.unwrap()))
            .collect();
        assert_eq!(ids, ["a", "e"]);
        assert_eq!(
            first[0].column(5).as_string::<i32>().value(0),
            r#"{"extra":1}"#
        );
        let rej = read_back(s.rejects_path.as_ref().unwrap());
        let idx: Vec<i64> = rej
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        let reasons: Vec<&str> = rej
            .iter()
            .flat_map(|b| b.column(2).as_string::<i32>().iter().map(|v| v.unwrap()))
            .collect();
        assert_eq!(idx, [3, 4, 5, 6]);
        assert_eq!(
            reasons,
            [
                "duplicate_key",
                "wrong_dimension",
                "non_finite",
                "malformed_record"
            ]
        );
    }

    #[test]
    fn truncated_gzip_keeps_what_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..1000 {
            writeln!(enc, r#"{{"id":"r{i}","vector":[{i},1],"ts":0}}"#).unwrap();
        }
        let bytes = enc.finish().unwrap();
        std::fs::write(&input, &bytes[..bytes.len() - 10]).unwrap();
        let s = convert(
            &input,
            "jsonl.gz",
            None,
            &dir.path().join("o"),
            &dir.path().join("r.parquet"),
            &options(2),
        )
        .unwrap();
        assert_eq!(s.reasons.get("unreadable_file"), Some(&1));
        assert_eq!(s.rows_in, s.rows_good + s.rows_rejected);
        assert!(s.rows_good > 900, "{}", s.rows_good);
    }

    #[test]
    fn unknown_format_is_an_error() {
        let err = convert(
            Path::new("x.txt"),
            "txt",
            None,
            Path::new("o"),
            Path::new("r"),
            &options(2),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown format \"txt\""), "{err}");
    }
}
