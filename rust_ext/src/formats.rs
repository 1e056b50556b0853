//! Landing formats: each is read as a stream of blocks (reader thread) and parsed block by block into
//! chunks of validated rows (parse workers).
//!
//! - JSONL (`.jsonl`, `.jsonl.gz`): one object per line; `record_index` is the 0-based line number.
//! - CSV with a header: `id, ts, model, source` and the vector as one JSON-array column `vector` or
//!   as columns `v0..v{d-1}`; other columns go to `payload` (as strings); empty cells are absent;
//!   a ts cell of digits is epoch milliseconds. `record_index` is the 0-based data row.
//! - NPY (float32 or float64, 2-D, C order) with a sidecar of the same stem, `.meta.jsonl` (one
//!   object per line: id, ts and the other fields) or `.meta.parquet`. `record_index` is the row.
//! - Parquet: the vector as list or fixed-size list of float/double, the other columns as scalars.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, TimeUnit};
use crossbeam_channel::{Receiver, Sender};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::engine::{truncate_chars, Chunk, Error, Options, Raws, Result};
use crate::json::{self, Value, VectorField};
use crate::record::{self, civil_from_days, Fields, Reason, Reject};

const BLOCK_BYTES: usize = 4 << 20;
const ROWS_PER_BLOCK: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    JsonlGz,
    Csv,
    Npy,
    Parquet,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format> {
        Ok(match name {
            "jsonl" => Format::Jsonl,
            "jsonl.gz" => Format::JsonlGz,
            "csv" => Format::Csv,
            "npy" => Format::Npy,
            "parquet" => Format::Parquet,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown format {other:?}: expected jsonl, jsonl.gz, csv, npy or parquet"
                )))
            }
        })
    }
}

/// Bytes of the input for one unit of work: read into a buffer (compressed input), or a range of
/// the memory-mapped file, which spares the kernel's copy into a buffer.
pub enum Block {
    Owned(Vec<u8>),
    Mapped(Arc<memmap2::Mmap>, std::ops::Range<usize>),
}

impl std::ops::Deref for Block {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Block::Owned(data) => data,
            Block::Mapped(map, range) => &map[range.clone()],
        }
    }
}

impl Block {
    /// Done with: a buffer comes back emptied for the reader to fill again; a mapped range is
    /// dropped from this process's resident pages (the page cache keeps them), so the peak RSS
    /// holds the blocks in flight, not the whole file.
    pub fn recycle(self) -> Vec<u8> {
        match self {
            Block::Owned(mut data) => {
                data.clear();
                data
            }
            Block::Mapped(map, range) => {
                let page = 4096;
                let start = range.start.div_ceil(page) * page;
                let end = range.end / page * page;
                if end > start {
                    // SAFETY: the mapping is a shared, read-only map of the file: after
                    // MADV_DONTNEED a page touched again reads back the same bytes from the file.
                    let _ = unsafe {
                        map.unchecked_advise_range(
                            memmap2::UncheckedAdvice::DontNeed,
                            start,
                            end - start,
                        )
                    };
                }
                Vec::new()
            }
        }
    }
}

/// A unit of parsing work.
pub enum Work {
    /// Whole lines of a JSONL file (the last block may end without a newline).
    Lines {
        seq: u64,
        first_index: u64,
        data: Block,
        /// Reading stopped after this block, and why.
        unreadable: Option<String>,
    },
    /// Whole CSV records, as bytes (record indices counted by the sequencer).
    Csv {
        seq: u64,
        layout: Arc<CsvLayout>,
        data: Block,
        /// Reading stopped after this block, and why.
        unreadable: Option<String>,
    },
    /// Rows whose vector is binary already (NPY, Parquet): the other fields as JSON objects.
    Rows {
        seq: u64,
        first_index: u64,
        meta: Vec<String>,
        vectors: Vectors,
    },
}

/// Vectors of a block of binary rows.
pub enum Vectors {
    /// Row-major `rows × dims` float32.
    F32(Vec<f32>, usize),
    /// Row-major `rows × dims` float32, a range of the memory-mapped file.
    F32Mapped(Block, usize),
    /// Row-major `rows × dims` float64 (rounded to float32 like NumPy does).
    F64(Vec<f64>, usize),
    /// One list per row: `None` for a null list, `Err(position)` for a null element.
    Lists(Vec<Option<std::result::Result<Vec<f32>, usize>>>),
}

/// Which CSV column holds what.
pub struct CsvLayout {
    id: Option<usize>,
    ts: Option<usize>,
    model: Option<usize>,
    source: Option<usize>,
    vector: CsvVector,
    extras: Vec<(String, usize)>,
    headers: Vec<String>,
}

enum CsvVector {
    Json(usize),
    Columns(Vec<usize>),
}

/// An opened landing file, ready to be read into blocks.
pub struct Source {
    kind: SourceKind,
}

/// Where the bytes of a text format come from.
enum Input {
    /// A stream (gunzipped on the way), read into buffers.
    Stream(Box<dyn Read + Send>),
    /// A plain file, memory-mapped (`None` when empty), from this offset on.
    Mapped(Option<Arc<memmap2::Mmap>>, usize),
}

impl Input {
    /// The input cut into blocks that end on a record boundary (`cut` gives the end of the last
    /// whole record of a block that starts on one), each taking a slot, handed to `emit` in order,
    /// the last one with why reading stopped early, if it did. Stops when `emit` returns false.
    fn blocks(
        self,
        slots: &Receiver<Vec<u8>>,
        cut: impl Fn(&[u8]) -> Option<usize>,
        emit: impl FnMut(Block, Option<String>) -> bool,
    ) {
        match self {
            Input::Stream(mut reader) => read_blocks(&mut reader, slots, cut, emit),
            Input::Mapped(map, start) => map_blocks(map, start, slots, cut, emit),
        }
    }
}

enum SourceKind {
    /// JSONL, plain or gzipped.
    Lines(Input),
    /// The records after the header, and which column holds what.
    Csv(Input, Arc<CsvLayout>),
    Npy(NpyReader, Sidecar),
    Parquet(
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        ParquetLayout,
    ),
}

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))
}

/// Opens `input` for conversion, checking what can be checked before any row is read.
pub fn open(
    input: &Path,
    format: Format,
    sidecar: Option<&Path>,
    options: &Options,
) -> Result<Source> {
    let kind = match format {
        Format::Jsonl => SourceKind::Lines(Input::Mapped(map_file(input)?, 0)),
        Format::JsonlGz => SourceKind::Lines(Input::Stream(gunzip(input)?)),
        Format::Csv => {
            let mut reader = csv_reader(true, BufReader::new(open_file(input)?));
            let headers = reader.byte_headers().map_err(|e| {
                Error::Invalid(format!(
                    "{}: cannot read the CSV header: {e}",
                    input.display()
                ))
            })?;
            let headers: Vec<String> = headers
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
                .collect();
            let layout = Arc::new(csv_layout(input, headers)?);
            // The records are cut from the mapped file from here on and parsed by the workers.
            let start = reader.position().byte() as usize;
            SourceKind::Csv(Input::Mapped(map_file(input)?, start), layout)
        }
        Format::Npy => {
            let npy = NpyReader::open(input)?;
            let sidecar = Sidecar::open(input, sidecar, npy.rows)?;
            SourceKind::Npy(npy, sidecar)
        }
        Format::Parquet => {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(open_file(input)?).map_err(|e| {
                    Error::Invalid(format!(
                        "{}: not a readable Parquet file: {e}",
                        input.display()
                    ))
                })?;
            let layout = ParquetLayout::new(input, builder.schema())?;
            let reader = builder.with_batch_size(ROWS_PER_BLOCK).build()?;
            SourceKind::Parquet(reader, layout)
        }
    };
    let _ = options;
    Ok(Source { kind })
}

/// The file mapped into memory (`None` when it is empty: there is nothing to map). The landing
/// file must not be truncated while it is converted: reading a page that is gone is a SIGBUS.
fn map_file(input: &Path) -> Result<Option<Arc<memmap2::Mmap>>> {
    let file = open_file(input)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the mapping is read-only and private to this conversion; landing files are
    // immutable once they land (a batch is keyed by the object's ETag).
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| Error::Io(format!("cannot map {}: {e}", input.display())))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Some(Arc::new(map)))
}

fn gunzip(input: &Path) -> Result<Box<dyn Read + Send>> {
    let file = open_file(input)?;
    if file.metadata()?.len() == 0 {
        return Ok(Box::new(std::io::empty())); // an empty file is zero records, compressed or not
    }
    Ok(Box::new(flate2::read::MultiGzDecoder::new(
        BufReader::with_capacity(1 << 20, file),
    )))
}

fn csv_layout(input: &Path, headers: Vec<String>) -> Result<CsvLayout> {
    let find = |name: &str| headers.iter().position(|h| h == name);
    let columns: Vec<usize> = (0..).map_while(|i| find(&format!("v{i}"))).collect();
    let vector = match (find("vector"), columns.is_empty()) {
        (Some(i), _) => CsvVector::Json(i),
        (None, false) => CsvVector::Columns(columns.clone()),
        (None, true) => {
            return Err(Error::Invalid(format!(
                "{}: CSV header has no `vector` column and no `v0..v{{d-1}}` columns (header: {})",
                input.display(),
                headers.join(",")
            )))
        }
    };
    let core = ["id", "ts", "model", "source", "vector"];
    let extras = headers
        .iter()
        .enumerate()
        .filter(|(i, h)| !core.contains(&h.as_str()) && !columns.contains(i))
        .map(|(i, h)| (h.clone(), i))
        .collect();
    Ok(CsvLayout {
        id: find("id"),
        ts: find("ts"),
        model: find("model"),
        source: find("source"),
        vector,
        extras,
        headers,
    })
}

impl Source {
    /// Reads the whole input into blocks of work, in order.
    pub fn run(self, tx: Sender<Work>, slots: Receiver<Vec<u8>>) -> Result<()> {
        let mut seq = 0u64;
        // Each block waits for a free slot (see `engine::convert`), then for room in the queue.
        let send = |work: Work| -> bool { slots.recv().is_ok() && tx.send(work).is_ok() };
        match self.kind {
            SourceKind::Lines(input) => {
                let mut first_index = 0u64;
                let last_line_end = |data: &[u8]| memchr::memrchr(b'\n', data).map(|p| p + 1);
                input.blocks(&slots, last_line_end, |data, unreadable| {
                    let lines = memchr::memchr_iter(b'\n', &data).count() as u64;
                    let work = Work::Lines {
                        seq,
                        first_index,
                        data,
                        unreadable,
                    };
                    seq += 1;
                    first_index += lines;
                    tx.send(work).is_ok()
                });
                Ok(())
            }
            SourceKind::Csv(input, layout) => {
                input.blocks(&slots, csv_records_end, |data, unreadable| {
                    let work = Work::Csv {
                        seq,
                        layout: Arc::clone(&layout),
                        data,
                        unreadable,
                    };
                    seq += 1;
                    tx.send(work).is_ok()
                });
                Ok(())
            }
            SourceKind::Npy(mut npy, mut sidecar) => {
                let mut first_index = 0u64;
                while first_index < npy.rows {
                    let n = (npy.rows - first_index).min(ROWS_PER_BLOCK as u64) as usize;
                    let vectors = npy.read_rows(n)?;
                    let meta = sidecar.next_rows(n)?;
                    if !send(Work::Rows {
                        seq,
                        first_index,
                        meta,
                        vectors,
                    }) {
                        return Ok(());
                    }
                    seq += 1;
                    first_index += n as u64;
                }
                Ok(())
            }
            SourceKind::Parquet(reader, layout) => {
                let mut first_index = 0u64;
                for batch in reader {
                    let batch = batch?;
                    let n = batch.num_rows() as u64;
                    let (meta, vectors) = layout.split(&batch)?;
                    if !send(Work::Rows {
                        seq,
                        first_index,
                        meta,
                        vectors,
                    }) {
                        return Ok(());
                    }
                    seq += 1;
                    first_index += n;
                }
                Ok(())
            }
        }
    }
}

/// [`Input::blocks`] of a stream: blocks of about `BLOCK_BYTES`, each read into the buffer its
/// slot brings back.
fn read_blocks(
    reader: &mut dyn Read,
    slots: &Receiver<Vec<u8>>,
    cut: impl Fn(&[u8]) -> Option<usize>,
    mut emit: impl FnMut(Block, Option<String>) -> bool,
) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let Ok(mut block) = slots.recv() else {
            return; // the pipeline stopped
        };
        block.clear();
        block.append(&mut carry);
        loop {
            block.reserve(BLOCK_BYTES);
            match read_block(reader, &mut block, BLOCK_BYTES) {
                (_, Some(e)) => {
                    // What was read before the damage stands; the partial record is dropped.
                    block.truncate(cut(&block).unwrap_or(0));
                    emit(Block::Owned(block), Some(e.to_string()));
                    return;
                }
                (0, None) => {
                    if !block.is_empty() {
                        emit(Block::Owned(block), None);
                    }
                    return;
                }
                (_, None) => {
                    if let Some(end) = cut(&block) {
                        carry.extend_from_slice(&block[end..]);
                        block.truncate(end);
                        break;
                    }
                    // One record longer than a block: keep reading.
                }
            }
        }
        if !emit(Block::Owned(block), None) {
            return;
        }
    }
}

/// [`Input::blocks`] of a mapped file, from `start`: ranges of about `BLOCK_BYTES`, no copy.
fn map_blocks(
    map: Option<Arc<memmap2::Mmap>>,
    start: usize,
    slots: &Receiver<Vec<u8>>,
    cut: impl Fn(&[u8]) -> Option<usize>,
    mut emit: impl FnMut(Block, Option<String>) -> bool,
) {
    let Some(map) = map else {
        return; // an empty file
    };
    let len = map.len();
    let mut at = start.min(len);
    while at < len {
        if slots.recv().is_err() {
            return; // the pipeline stopped
        }
        let mut end = (at + BLOCK_BYTES).min(len);
        while end < len {
            match cut(&map[at..end]) {
                Some(e) => {
                    end = at + e;
                    break;
                }
                None => end = (end + BLOCK_BYTES).min(len), // one record longer than a block
            }
        }
        if !emit(Block::Mapped(Arc::clone(&map), at..end), None) {
            return;
        }
        at = end;
    }
}

/// The end of the last whole CSV record in `block`, which starts on a record boundary: the
/// position after its terminator (`\n` or `\r` outside quotes), as the `csv` crate reads records.
/// A quote opens a quoted field only at the start of a field; inside one, `""` is a quote.
fn csv_records_end(block: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut at = 0;
    let mut quoted = false;
    while at < block.len() {
        if quoted {
            let Some(p) = memchr::memchr(b'"', &block[at..]) else {
                break;
            };
            let q = at + p;
            if block.get(q + 1) == Some(&b'"') {
                at = q + 2;
            } else {
                quoted = false;
                at = q + 1;
            }
        } else {
            let Some(p) = memchr::memchr3(b'"', b'\n', b'\r', &block[at..]) else {
                break;
            };
            let q = at + p;
            if block[q] == b'"' {
                quoted = q == 0 || matches!(block[q - 1], b',' | b'\n' | b'\r');
            } else {
                end = Some(q + 1);
            }
            at = q + 1;
        }
    }
    end
}

/// The CSV dialect of landing files: RFC 4180 quoting, rows of any length.
fn csv_reader<R: Read>(headers: bool, input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(headers)
        .from_reader(input)
}

/// Appends up to `limit` bytes of the input to `block` (no zero-filling); the bytes read before an
/// error are kept.
fn read_block(
    reader: &mut dyn Read,
    block: &mut Vec<u8>,
    limit: usize,
) -> (usize, Option<std::io::Error>) {
    let before = block.len();
    let outcome = reader.take(limit as u64).read_to_end(block);
    (block.len() - before, outcome.err())
}

/// Python's `str.strip()` whitespace: Unicode White_Space plus the separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Collects a block's rows; the single place where a record becomes a good row or a reject.
struct Builder<'o> {
    chunk: Chunk,
    options: &'o Options,
    raws: Vec<String>,
}

impl<'o> Builder<'o> {
    fn new(seq: u64, options: &'o Options) -> Self {
        Builder {
            chunk: Chunk {
                seq,
                ..Chunk::default()
            },
            options,
            raws: Vec::new(),
        }
    }

    fn reject(&mut self, index: u64, reason: Reason, detail: String, raw: &str) {
        self.chunk.rejects.push(Reject {
            index,
            reason,
            detail,
            raw: truncate_chars(raw, self.options.raw_limit),
        });
    }

    /// Validates `fields` whose vector values sit at `vectors[mark..]`; keeps or rejects the row.
    /// Returns whether it was kept.
    fn finish_record(
        &mut self,
        index: u64,
        fields: &Fields,
        mark: usize,
        raw: &dyn Fn() -> String,
    ) -> bool {
        let kept = self.keep(index, fields, mark, raw);
        if !kept {
            self.chunk.vectors.truncate(mark);
        }
        kept
    }

    /// Validates `fields` whose vector values sit at `vectors[at..]`; records the row or the
    /// reject, and leaves the values where they are. Returns whether the row was kept.
    fn keep(&mut self, index: u64, fields: &Fields, at: usize, raw: &dyn Fn() -> String) -> bool {
        let dims = self.options.dims;
        // A row of the wrong dimension is rejected by `admit` before its values count.
        let values = self
            .chunk
            .vectors
            .get(at..at + dims)
            .map_or((false, 0.0), finite_and_norm);
        self.admit(index, fields, values, raw)
    }

    /// [`Self::keep`] for a row whose values were checked already: `(finite, norm)`.
    fn admit(
        &mut self,
        index: u64,
        fields: &Fields,
        (finite, norm): (bool, f64),
        raw: &dyn Fn() -> String,
    ) -> bool {
        let dims = self.options.dims;
        let valid = match record::validate(fields, dims) {
            Ok(v) => v,
            Err((reason, detail)) => {
                self.reject(index, reason, detail, &raw());
                return false;
            }
        };
        if !finite {
            self.reject(
                index,
                Reason::NonFinite,
                "vector has NaN or infinite values (as float32)".into(),
                &raw(),
            );
            return false;
        }
        let c = &mut self.chunk;
        c.index.push(index);
        c.ids.push(valid.id);
        c.models.push(valid.model);
        c.ts.push(valid.ts);
        c.sources.push(valid.source);
        c.payloads.push(valid.payload);
        c.norms.push(norm);
        true
    }

    fn done(mut self) -> Chunk {
        if !self.raws.is_empty() {
            self.chunk.raws = Raws::Strings(self.raws);
        }
        self.chunk
    }
}

/// Whether every value of `row` is finite, and its L2 norm (summed in f64): one pass, in eight
/// independent lanes so that it vectorises (a single running sum is one long dependency chain).
fn finite_and_norm(row: &[f32]) -> (bool, f64) {
    let mut sums = [0f64; 8];
    let mut finite = true;
    let lanes = row.chunks_exact(8);
    let rest = lanes.remainder();
    for lane in lanes {
        for (sum, &v) in sums.iter_mut().zip(lane) {
            finite &= v.is_finite();
            *sum += f64::from(v) * f64::from(v);
        }
    }
    for (sum, &v) in sums.iter_mut().zip(rest) {
        finite &= v.is_finite();
        *sum += f64::from(v) * f64::from(v);
    }
    (finite, sums.iter().sum::<f64>().sqrt())
}

/// Splits a parsed JSON object into the contract's fields.
fn fields_of<'a>(record: json::Record<'a>, vector: VectorField) -> Fields<'a> {
    let mut f = Fields {
        id: None,
        ts: None,
        model: None,
        source: None,
        vector,
        extras: Vec::new(),
    };
    for (key, value) in record.fields {
        // Repeated keys: the last one wins, as in Python.
        match key.as_ref() {
            "id" => f.id = Some(value),
            "ts" => f.ts = Some(value),
            "model" => f.model = Some(value),
            "source" => f.source = Some(value),
            _ => f.extras.push((key, value)),
        }
    }
    f
}

/// Parses one block of work into a chunk.
pub fn parse(work: Work, options: &Options) -> Chunk {
    match work {
        Work::Lines {
            seq,
            first_index,
            data,
            unreadable,
        } => parse_lines(seq, first_index, data, unreadable, options),
        Work::Csv {
            seq,
            layout,
            data,
            unreadable,
        } => parse_csv(seq, &layout, data, unreadable, options),
        Work::Rows {
            seq,
            first_index,
            meta,
            vectors,
        } => parse_rows(seq, first_index, meta, vectors, options),
    }
}

fn parse_lines(
    seq: u64,
    first_index: u64,
    data: Block,
    unreadable: Option<String>,
    options: &Options,
) -> Chunk {
    let mut b = Builder::new(seq, options);
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    // One UTF-8 check for the whole block; lines are decoded one by one only if it fails.
    let valid = std::str::from_utf8(&data).ok();
    let mut start = 0usize;
    let mut index = first_index;
    let mut lines = 0u64;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |p| start + p);
        let line = &data[start..end];
        lines += 1;
        let text = match valid {
            Some(all) => Cow::Borrowed(&all[start..end]),
            None => String::from_utf8_lossy(line),
        };
        let trimmed = text.trim_matches(is_py_space);
        if !trimmed.is_empty() {
            b.chunk.rows_in += 1;
            let mark = b.chunk.vectors.len();
            let kept = match json::parse_record(trimmed, &mut b.chunk.vectors) {
                Ok(rec) => {
                    let vector = rec.vector.clone().unwrap_or(VectorField::Missing);
                    let fields = fields_of(rec, vector);
                    b.finish_record(index, &fields, mark, &|| trimmed.to_string())
                }
                Err(Ok(kind)) => {
                    b.reject(
                        index,
                        Reason::MalformedRecord,
                        format!("record must be a JSON object, got {kind}"),
                        trimmed,
                    );
                    false
                }
                Err(Err(e)) => {
                    b.reject(
                        index,
                        Reason::MalformedRecord,
                        format!("not valid JSON: {e}"),
                        trimmed,
                    );
                    false
                }
            };
            if kept {
                // The raw text of a good row, for a later duplicate: its trimmed range in the block.
                let lead = line.len() - line.trim_ascii_start().len();
                let trail = line.len() - line.trim_ascii_end().len();
                ranges.push((
                    (start + lead) as u32,
                    (end - trail).max(start + lead) as u32,
                ));
            }
        }
        index += 1;
        start = end + 1;
    }
    let mut chunk = b.done();
    chunk.unreadable = unreadable.map(|why| (first_index + lines, why));
    chunk.raws = Raws::Text(data, ranges);
    chunk
}

fn cell<'a>(cells: &'a [Cow<'a, [u8]>], i: Option<usize>) -> Option<Cow<'a, str>> {
    let bytes = cells.get(i?)?;
    if bytes.is_empty() {
        return None;
    }
    // The checked conversion first: it has a fast path for ASCII, which the lossy one lacks.
    Some(match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    })
}

/// A CSV record's raw text for the quarantine: its cells joined by commas.
pub fn csv_raw(cells: &[Cow<'_, [u8]>]) -> String {
    cells
        .iter()
        .map(|c| String::from_utf8_lossy(c))
        .collect::<Vec<_>>()
        .join(",")
}

/// The raw text of the one CSV record that `text` holds.
pub fn csv_record_raw(text: &[u8]) -> String {
    let mut raw = String::new();
    csv_records(text, |_, cells| raw = csv_raw(cells));
    raw
}

/// Calls `each` with the byte range and the cells of every record of `block` (whole records, as
/// [`csv_records_end`] cuts them), read as the `csv` crate reads them: RFC 4180 quotes (`""` is a
/// quote inside a quoted cell; after the closing quote, bytes up to the next comma are kept as
/// they are; a quote elsewhere is an ordinary byte), `\r`, `\n` or `\r\n` ending a record, blank
/// lines skipped. Cells borrow from the block unless an escaped quote must be undone.
pub fn csv_records<'a>(block: &'a [u8], mut each: impl FnMut((usize, usize), &[Cow<'a, [u8]>])) {
    let n = block.len();
    let mut at = 0;
    let mut cells: Vec<Cow<'a, [u8]>> = Vec::new();
    let field_end =
        |from: usize| memchr::memchr3(b',', b'\n', b'\r', &block[from..]).map_or(n, |p| from + p);
    while at < n {
        if matches!(block[at], b'\n' | b'\r') {
            at += 1; // a blank line, or the LF of a CRLF
            continue;
        }
        let start = at;
        cells.clear();
        loop {
            if at < n && block[at] == b'"' {
                at += 1;
                let mut owned: Option<Vec<u8>> = None;
                let mut piece = at;
                let content_end = loop {
                    match memchr::memchr(b'"', &block[at..]) {
                        None => {
                            at = n; // an open quote runs to the end of the input
                            break n;
                        }
                        Some(p) if block.get(at + p + 1) == Some(&b'"') => {
                            let q = at + p;
                            owned
                                .get_or_insert_with(Vec::new)
                                .extend_from_slice(&block[piece..=q]);
                            at = q + 2;
                            piece = at;
                        }
                        Some(p) => {
                            let q = at + p;
                            at = q + 1;
                            break q;
                        }
                    }
                };
                let tail = field_end(at);
                if owned.is_none() && tail == at {
                    cells.push(Cow::Borrowed(&block[piece..content_end]));
                } else {
                    let mut text = owned.unwrap_or_default();
                    text.extend_from_slice(&block[piece..content_end]);
                    text.extend_from_slice(&block[at..tail]);
                    cells.push(Cow::Owned(text));
                }
                at = tail;
            } else {
                let end = field_end(at);
                cells.push(Cow::Borrowed(&block[at..end]));
                at = end;
            }
            if at < n && block[at] == b',' {
                at += 1;
                continue;
            }
            break;
        }
        let end = at;
        if at < n {
            at += 1; // the terminator (an LF after a CR is skipped as a blank line)
        }
        each((start, end), &cells);
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn csv_ts(text: Cow<'_, str>) -> Value<'_> {
    if is_integer_text(&text) {
        // Epoch milliseconds; beyond an i64 it is out of range either way.
        match text.parse::<i64>() {
            Ok(v) => Value::Int(v),
            Err(_) => Value::Num(f64::INFINITY, "1"),
        }
    } else {
        Value::Str(text)
    }
}

fn parse_csv(
    seq: u64,
    layout: &CsvLayout,
    data: Block,
    unreadable: Option<String>,
    options: &Options,
) -> Chunk {
    let mut b = Builder::new(seq, options);
    let mut kept: Vec<(u32, u32)> = Vec::new();
    let mut index = 0u64; // relative: the sequencer knows how many records came before
    csv_records(&data, |(start, end), rec| {
        b.chunk.rows_in += 1;
        let raw = || csv_raw(rec);
        let mark = b.chunk.vectors.len();
        let vector = match &layout.vector {
            CsvVector::Json(i) => match cell(rec, Some(*i)) {
                None => Ok(VectorField::Missing),
                Some(text) => json::parse_vector_text(&text, &mut b.chunk.vectors),
            },
            CsvVector::Columns(cols) => {
                let mut first_bad = None;
                for (position, &c) in cols.iter().enumerate() {
                    let text = cell(rec, Some(c)).unwrap_or_default();
                    let value = json::parse_value(text.trim())
                        .ok()
                        .and_then(|v| json::number_to_f32(&v));
                    if value.is_none() && first_bad.is_none() {
                        first_bad = Some((
                            position,
                            format!("{:?}", text.chars().take(40).collect::<String>()),
                        ));
                    }
                    b.chunk.vectors.push(value.unwrap_or(f32::NAN));
                }
                Ok(VectorField::Array {
                    len: cols.len(),
                    first_bad,
                })
            }
        };
        match vector {
            Err(e) => {
                b.chunk.vectors.truncate(mark);
                b.reject(
                    index,
                    Reason::MalformedRecord,
                    format!("vector is not valid JSON: {e}"),
                    &raw(),
                );
            }
            Ok(vector) => {
                let fields = Fields {
                    id: cell(rec, layout.id).map(Value::Str),
                    ts: cell(rec, layout.ts).map(csv_ts),
                    model: cell(rec, layout.model).map(Value::Str),
                    source: cell(rec, layout.source).map(Value::Str),
                    vector,
                    extras: layout
                        .extras
                        .iter()
                        .filter_map(|(name, i)| {
                            cell(rec, Some(*i))
                                .map(|v| (Cow::Borrowed(name.as_str()), Value::Str(v)))
                        })
                        .collect(),
                };
                if b.finish_record(index, &fields, mark, &raw) {
                    // Its raw text is only rebuilt if a later record turns out to repeat it.
                    kept.push((start as u32, end as u32));
                }
            }
        }
        index += 1;
    });
    let _ = &layout.headers;
    let mut chunk = b.done();
    chunk.relative = true;
    chunk.records = index;
    chunk.unreadable = unreadable.map(|why| (index, why));
    chunk.raws = Raws::CsvText(data, kept);
    chunk
}

/// The fields of a binary row from its metadata object; a reject if that is not one.
fn meta_fields<'a>(
    b: &mut Builder,
    index: u64,
    text: &'a str,
    vector: VectorField,
    dummy: &mut Vec<f32>,
) -> Option<Fields<'a>> {
    dummy.clear();
    match json::parse_record(text, dummy) {
        Ok(rec) => Some(fields_of(rec, vector)),
        Err(e) => {
            let detail = match e {
                Ok(kind) => format!("metadata must be a JSON object, got {kind}"),
                Err(e) => format!("metadata is not valid JSON: {e}"),
            };
            b.reject(index, Reason::MalformedRecord, detail, text);
            None
        }
    }
}

/// Validates a block of float32 rows (`d` floats each, row `n` described by `meta[n]`): records each
/// good row's fields or the reject. Returns the rows kept; their floats stay where they are.
fn admit_float_rows(
    b: &mut Builder,
    first_index: u64,
    meta: &[String],
    floats: &[f32],
    d: usize,
) -> Vec<usize> {
    let mut dummy = Vec::new();
    let mut kept = Vec::with_capacity(meta.len());
    for (n, text) in meta.iter().enumerate() {
        let index = first_index + n as u64;
        b.chunk.rows_in += 1;
        let vector = VectorField::Array {
            len: d,
            first_bad: None,
        };
        let Some(fields) = meta_fields(b, index, text, vector, &mut dummy) else {
            continue;
        };
        let values = finite_and_norm(&floats[n * d..(n + 1) * d]);
        if b.admit(index, &fields, values, &|| text.clone()) {
            kept.push(n);
            b.raws.push(text.clone());
        }
    }
    kept
}

fn parse_rows(
    seq: u64,
    first_index: u64,
    meta: Vec<String>,
    vectors: Vectors,
    options: &Options,
) -> Chunk {
    let mut b = Builder::new(seq, options);
    let mut dummy = Vec::new();
    if let Vectors::F32Mapped(block, d) = vectors {
        // The chunk's floats stay in the mapped file unless a row is rejected; then the good
        // rows are copied out.
        let floats: &[f32] = bytemuck::cast_slice(&block);
        let kept = admit_float_rows(&mut b, first_index, &meta, floats, d);
        if kept.len() == meta.len() {
            b.chunk.mapped = Some(block);
        } else {
            for n in kept {
                b.chunk
                    .vectors
                    .extend_from_slice(&floats[n * d..(n + 1) * d]);
            }
            block.recycle();
        }
        return b.done();
    }
    if let Vectors::F32(mut values, d) = vectors {
        // The block's floats become the chunk's: good rows stay in place, and only the rows after
        // a rejected one move up.
        let kept = admit_float_rows(&mut b, first_index, &meta, &values, d);
        for (to, &n) in kept.iter().enumerate() {
            if to != n {
                values.copy_within(n * d..(n + 1) * d, to * d);
            }
        }
        values.truncate(kept.len() * d);
        b.chunk.vectors = values;
        return b.done();
    }
    for (n, text) in meta.iter().enumerate() {
        let index = first_index + n as u64;
        b.chunk.rows_in += 1;
        let mark = b.chunk.vectors.len();
        let vector = match &vectors {
            Vectors::F32(..) | Vectors::F32Mapped(..) => {
                unreachable!("float32 blocks are taken in place above")
            }
            Vectors::F64(values, d) => {
                b.chunk
                    .vectors
                    .extend(values[n * d..(n + 1) * d].iter().map(|&v| v as f32));
                VectorField::Array {
                    len: *d,
                    first_bad: None,
                }
            }
            Vectors::Lists(rows) => match &rows[n] {
                None => VectorField::Missing,
                Some(Ok(values)) => {
                    b.chunk.vectors.extend_from_slice(values);
                    VectorField::Array {
                        len: values.len(),
                        first_bad: None,
                    }
                }
                Some(Err(position)) => VectorField::Array {
                    len: 0,
                    first_bad: Some((*position, "None".into())),
                },
            },
        };
        let Some(fields) = meta_fields(&mut b, index, text, vector, &mut dummy) else {
            b.chunk.vectors.truncate(mark);
            continue;
        };
        if b.finish_record(index, &fields, mark, &|| text.clone()) {
            b.raws.push(text.clone());
        }
    }
    b.done()
}

// ---------------------------------------------------------------------------------------------
// NPY

/// A `.npy` file's 2-D float matrix, read row block by row block.
pub struct NpyReader {
    reader: BufReader<File>,
    pub rows: u64,
    dims: usize,
    float64: bool,
    /// Float32 data on a little-endian machine is used where it lies in the mapped file (no copy
    /// into a buffer): the map and the byte offset of the next row.
    mapped: Option<(Arc<memmap2::Mmap>, usize)>,
}

impl NpyReader {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |what: String| Error::Invalid(format!("{}: {what}", path.display()));
        let mut reader = BufReader::with_capacity(BLOCK_BYTES, open_file(path)?);
        let mut magic = [0u8; 8];
        reader
            .read_exact(&mut magic)
            .map_err(|_| bad("not an NPY file (too short)".into()))?;
        if &magic[..6] != b"\x93NUMPY" {
            return Err(bad("not an NPY file (no \\x93NUMPY magic)".into()));
        }
        let header_len = match magic[6] {
            1 => {
                let mut n = [0u8; 2];
                reader.read_exact(&mut n)?;
                u16::from_le_bytes(n) as usize
            }
            2 | 3 => {
                let mut n = [0u8; 4];
                reader.read_exact(&mut n)?;
                u32::from_le_bytes(n) as usize
            }
            v => return Err(bad(format!("unsupported NPY version {v}"))),
        };
        let mut header = vec![0u8; header_len];
        reader
            .read_exact(&mut header)
            .map_err(|_| bad("truncated NPY header".into()))?;
        let header = String::from_utf8_lossy(&header).to_string();
        let field = |name: &str| -> Option<String> {
            let at = header.find(&format!("'{name}'"))? + name.len() + 2;
            let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
            let end = if rest.starts_with('(') {
                rest.find(')')? + 1
            } else {
                rest.find([',', '}'])?
            };
            Some(rest[..end].trim().trim_matches('\'').to_string())
        };
        let descr =
            field("descr").ok_or_else(|| bad(format!("NPY header has no descr: {header}")))?;
        let float64 = match descr.as_str() {
            "<f4" => false,
            "<f8" => true,
            other => {
                return Err(bad(format!(
                "NPY dtype {other:?} is not supported: expected float32 ('<f4') or float64 ('<f8')"
            )))
            }
        };
        if field("fortran_order").as_deref() != Some("False") {
            return Err(bad(
                "NPY array in Fortran order is not supported: save it in C order".into(),
            ));
        }
        let shape =
            field("shape").ok_or_else(|| bad(format!("NPY header has no shape: {header}")))?;
        let dims: Vec<u64> = shape
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(format!("NPY shape {shape} is not understood")))?;
        let [rows, d] = dims[..] else {
            return Err(bad(format!(
                "NPY array must be 2-D (rows × dims), got shape {shape}"
            )));
        };
        let width = if float64 { 8 } else { 4 };
        let expected = 8 + if magic[6] == 1 { 2 } else { 4 } + header_len as u64 + rows * d * width;
        let actual = std::fs::metadata(path)?.len();
        if actual < expected {
            return Err(bad(format!(
                "NPY file is truncated: {actual} bytes, its header promises {expected}"
            )));
        }
        let data_start = expected - rows * d * width;
        let mapped = match (float64, cfg!(target_endian = "little"), data_start % 4) {
            (false, true, 0) => map_file(path)?.map(|map| (map, data_start as usize)),
            _ => None,
        };
        Ok(NpyReader {
            reader,
            rows,
            dims: d as usize,
            float64,
            mapped,
        })
    }

    fn read_rows(&mut self, n: usize) -> Result<Vectors> {
        if let Some((map, at)) = &mut self.mapped {
            let end = *at + n * self.dims * 4;
            let block = Block::Mapped(map.clone(), *at..end);
            *at = end;
            return Ok(Vectors::F32Mapped(block, self.dims));
        }
        // Straight into the typed buffer (NPY data is little-endian, '<f4' / '<f8').
        Ok(if self.float64 {
            let mut values = vec![0f64; n * self.dims];
            self.reader
                .read_exact(bytemuck::cast_slice_mut(&mut values))?;
            if cfg!(target_endian = "big") {
                values
                    .iter_mut()
                    .for_each(|v| *v = f64::from_bits(v.to_bits().swap_bytes()));
            }
            Vectors::F64(values, self.dims)
        } else {
            let mut values = vec![0f32; n * self.dims];
            self.reader
                .read_exact(bytemuck::cast_slice_mut(&mut values))?;
            if cfg!(target_endian = "big") {
                values
                    .iter_mut()
                    .for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
            }
            Vectors::F32(values, self.dims)
        })
    }
}

/// The sidecar of an NPY file: one metadata row per vector.
pub enum Sidecar {
    Lines(BufReader<File>),
    Parquet(std::vec::IntoIter<String>),
}

/// The sidecar paths tried for `input`, in order.
pub fn sidecar_candidates(input: &Path) -> Vec<PathBuf> {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(".npy").unwrap_or(&name);
    [".meta.jsonl", ".meta.parquet"]
        .iter()
        .map(|suffix| input.with_file_name(format!("{stem}{suffix}")))
        .collect()
}

impl Sidecar {
    fn open(input: &Path, given: Option<&Path>, rows: u64) -> Result<Self> {
        let path = match given {
            Some(p) => p.to_path_buf(),
            None => sidecar_candidates(input)
                .into_iter()
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: no sidecar with the ids and timestamps: expected {}",
                        input.display(),
                        sidecar_candidates(input)
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ))
                })?,
        };
        let is_parquet = path.extension().is_some_and(|e| e == "parquet");
        let (sidecar, count) = if is_parquet {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(open_file(&path)?).map_err(|e| {
                    Error::Invalid(format!(
                        "{}: not a readable Parquet file: {e}",
                        path.display()
                    ))
                })?;
            let layout = ParquetLayout::scalars(builder.schema());
            let mut rows_out = Vec::new();
            for batch in builder.build()? {
                rows_out.extend(layout.split(&batch?)?.0);
            }
            let n = rows_out.len() as u64;
            (Sidecar::Parquet(rows_out.into_iter()), n)
        } else {
            let n = count_lines(&mut open_file(&path)?)?.0;
            (Sidecar::Lines(BufReader::new(open_file(&path)?)), n)
        };
        if count != rows {
            return Err(Error::Invalid(format!(
                "sidecar {} has {count} rows but {} holds {rows} vectors",
                path.display(),
                input.display()
            )));
        }
        Ok(sidecar)
    }

    fn next_rows(&mut self, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        match self {
            Sidecar::Parquet(rows) => out.extend(rows.by_ref().take(n)),
            Sidecar::Lines(reader) => {
                let mut line = Vec::new();
                while out.len() < n {
                    line.clear();
                    if std::io::BufRead::read_until(reader, b'\n', &mut line)? == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_matches(is_py_space);
                    if !text.is_empty() {
                        out.push(text.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Parquet (and Arrow rows in general)

/// Which columns of an Arrow schema hold the vector and the other fields.
pub struct ParquetLayout {
    vector: Option<usize>,
    scalars: Vec<(String, usize)>,
}

impl ParquetLayout {
    fn new(input: &Path, schema: &arrow::datatypes::SchemaRef) -> Result<Self> {
        let vector = schema.index_of("vector").ok();
        if let Some(i) = vector {
            let ok = match schema.field(i).data_type() {
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                    matches!(f.data_type(), DataType::Float32 | DataType::Float64)
                }
                _ => false,
            };
            if !ok {
                return Err(Error::Invalid(format!(
                    "{}: column `vector` must be a list or fixed-size list of float or double, got {}",
                    input.display(),
                    schema.field(i).data_type()
                )));
            }
        } else {
            return Err(Error::Invalid(format!(
                "{}: Parquet file has no `vector` column (columns: {})",
                input.display(),
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut layout = Self::scalars(schema);
        layout.scalars.retain(|(_, i)| Some(*i) != vector);
        layout.vector = vector;
        Ok(layout)
    }

    fn scalars(schema: &arrow::datatypes::SchemaRef) -> Self {
        ParquetLayout {
            vector: None,
            scalars: schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name().clone(), i))
                .collect(),
        }
    }

    /// Each row's non-vector fields as a JSON object (nulls kept), and the vectors.
    fn split(&self, batch: &RecordBatch) -> Result<(Vec<String>, Vectors)> {
        let n = batch.num_rows();
        let mut meta = vec![String::from("{"); n];
        for (k, (name, i)) in self.scalars.iter().enumerate() {
            let column = batch.column(*i);
            let mut key = String::new();
            json::Value::Str(Cow::Borrowed(name)).write_sorted(&mut key);
            for (row, out) in meta.iter_mut().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                out.push_str(&key);
                out.push(':');
                scalar_json(column, row, out)?;
            }
        }
        for out in &mut meta {
            out.push('}');
        }
        let vectors = match self.vector {
            Some(i) => list_vectors(batch.column(i))?,
            None => Vectors::Lists(vec![None; n]),
        };
        Ok((meta, vectors))
    }
}

fn scalar_json(column: &ArrayRef, row: usize, out: &mut String) -> Result<()> {
    if column.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    let micros = |v: i64, unit: &TimeUnit| match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v.div_euclid(1000),
    };
    match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow::array::cast::as_string_array(&arrow::compute::cast(
                &column.slice(row, 1),
                &DataType::Utf8,
            )?)
            .value(0)
            .to_string();
            json::Value::Str(Cow::Owned(s)).write_sorted(out);
        }
        DataType::Boolean => out.push_str(if column.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        DataType::Float32 => push_float(
            f64::from(column.as_primitive::<Float32Type>().value(row)),
            out,
        ),
        DataType::Float64 => push_float(column.as_primitive::<Float64Type>().value(row), out),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            let text = arrow::util::display::array_value_to_string(column, row)?;
            out.push_str(&text);
        }
        DataType::Timestamp(unit, tz) => {
            let v = arrow::compute::cast(&column.slice(row, 1), &DataType::Int64)?;
            let us = micros(
                v.as_primitive::<arrow::datatypes::Int64Type>().value(0),
                unit,
            );
            let day = us.div_euclid(crate::engine::DAY_MICROS);
            let rem = us.rem_euclid(crate::engine::DAY_MICROS);
            let (h, m, s, f) = (
                rem / 3_600_000_000,
                rem / 60_000_000 % 60,
                rem / 1_000_000 % 60,
                rem % 1_000_000,
            );
            let offset = if tz.is_some() { "+00:00" } else { "" };
            let text = format!(
                "{}T{h:02}:{m:02}:{s:02}.{f:06}{offset}",
                civil_from_days(day)
            );
            json::Value::Str(Cow::Owned(text)).write_sorted(out);
        }
        _ => {
            let text = arrow::util::display::array_value_to_string(column, row)?;
            json::Value::Str(Cow::Owned(text)).write_sorted(out);
        }
    }
    Ok(())
}

fn push_float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // Shortest text that reads back as the same f64, always with a fraction or exponent.
        let text = format!("{v:?}");
        out.push_str(&text);
    }
}

fn list_vectors(column: &ArrayRef) -> Result<Vectors> {
    let n = column.len();
    let mut rows = Vec::with_capacity(n);
    let row_values = |values: ArrayRef| -> std::result::Result<Vec<f32>, usize> {
        if let Some(p) = (0..values.len()).find(|&p| values.is_null(p)) {
            return Err(p);
        }
        Ok(match values.data_type() {
            DataType::Float64 => values
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|&v| v as f32)
                .collect(),
            _ => values.as_primitive::<Float32Type>().values().to_vec(),
        })
    };
    for row in 0..n {
        if column.is_null(row) {
            rows.push(None);
            continue;
        }
        let values = match column.data_type() {
            DataType::List(_) => column.as_list::<i32>().value(row),
            DataType::LargeList(_) => column.as_list::<i64>().value(row),
            DataType::FixedSizeList(..) => column.as_fixed_size_list().value(row),
            other => {
                return Err(Error::Invalid(format!(
                    "vector column of type {other} is not supported"
                )))
            }
        };
        rows.push(Some(row_values(values)));
    }
    Ok(Vectors::Lists(rows))
}

// ---------------------------------------------------------------------------------------------
// Counting

/// Non-blank lines of a stream, and why reading stopped early if it did.
fn count_lines(reader: &mut dyn Read) -> Result<(u64, Option<String>)> {
    let mut buf = vec![0u8; 1 << 20];
    let mut count = 0u64;
    let mut in_line = false; // the current line has a non-blank byte
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok((count, Some(e.to_string()))),
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                count += u64::from(in_line);
                in_line = false;
            } else if !b.is_ascii_whitespace() {
                in_line = true;
            }
        }
    }
    Ok((count + u64::from(in_line), None))
}

pub fn count(
    input: &Path,
    format: Format,
    sidecar: Option<&Path>,
) -> Result<(u64, Option<String>)> {
    match format {
        Format::Jsonl => count_lines(&mut open_file(input)?),
        Format::JsonlGz => count_lines(&mut gunzip(input)?),
        Format::Csv => {
            let mut reader = csv_reader(
                true,
                BufReader::with_capacity(BLOCK_BYTES, open_file(input)?),
            );
            let mut record = csv::ByteRecord::new();
            let mut n = 0;
            while reader
                .read_byte_record(&mut record)
                .map_err(|e| Error::Invalid(format!("CSV: {e}")))?
            {
                n += 1;
            }
            Ok((n, None))
        }
        Format::Npy => {
            let npy = NpyReader::open(input)?;
            let rows = npy.rows;
            Sidecar::open(input, sidecar, rows)?;
            Ok((rows, None))
        }
        Format::Parquet => {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(open_file(input)?).map_err(|e| {
                    Error::Invalid(format!(
                        "{}: not a readable Parquet file: {e}",
                        input.display()
                    ))
                })?;
            Ok((builder.metadata().file_metadata().num_rows() as u64, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{csv_records, csv_records_end};

    /// Each record the `csv` crate reads from `text`: its cells and where it ends.
    fn crate_records(text: &[u8]) -> Vec<(Vec<Vec<u8>>, usize)> {
        let mut reader = super::csv_reader(false, text);
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let cells = record.iter().map(<[u8]>::to_vec).collect();
            out.push((cells, reader.position().byte() as usize));
        }
        out
    }

    fn our_records(text: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        csv_records(text, |_, cells| {
            out.push(cells.iter().map(|c| c.to_vec()).collect())
        });
        out
    }

    /// Texts of CSV's special bytes, tens of thousands of them, from a fixed seed.
    fn texts() -> impl Iterator<Item = Vec<u8>> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ab,\"\n\r";
        (0..5_000).map(move |_| {
            let len = (next() % 24) as usize;
            (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        })
    }

    #[test]
    fn records_split_as_the_csv_crate_splits_them() {
        for text in texts().chain([
            b"a,\"x\ny\",1\r\n\"\"\"q\"\"\",\"\"\n5\",in\"ch,\"z\r\n\",2\n\nlast,\"open\n".to_vec(),
        ]) {
            let expected: Vec<_> = crate_records(&text).into_iter().map(|(c, _)| c).collect();
            assert_eq!(
                our_records(&text),
                expected,
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn block_ends_fall_between_records_only() {
        for text in texts() {
            let ends: Vec<usize> = crate_records(&text).into_iter().map(|(_, e)| e).collect();
            for len in 0..=text.len() {
                let block = &text[..len];
                let cut = csv_records_end(block).unwrap_or(0);
                // The records before the cut are whole: read alone, they are what the crate reads.
                let before: Vec<_> = crate_records(&text)
                    .into_iter()
                    .filter(|(_, e)| *e <= cut)
                    .map(|(c, _)| c)
                    .collect();
                assert_eq!(
                    our_records(&block[..cut]),
                    before,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(block)
                );
                // No record that ends inside the block (before its last byte) is left behind.
                assert!(
                    !ends.iter().any(|&e| e > cut && e < len),
                    "{:?}",
                    String::from_utf8_lossy(block)
                );
            }
        }
    }
}
