//! Parquet files laid out for the Iceberg table: zstd, BYTE_STREAM_SPLIT floats, dictionary-encoded
//! low-cardinality strings, chunk statistics; and the rejects file.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Float32Type, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescPtr, ColumnPath};

use crate::engine::{DataFile, Error, Options, Result};
use crate::record::Reject;
use crate::vector_column::{Pages, VectorColumn};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The list element of `vector`: float32, never null (the table's `element_required`).
pub fn vector_element() -> FieldRef {
    Arc::new(Field::new("element", DataType::Float32, false))
}

/// The Arrow schema of `nextesy.embeddings` data files (same as `schema.EMBEDDINGS_ARROW`).
pub fn embeddings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("model", DataType::Utf8, false),
                Field::new("vector", DataType::List(vector_element()), false),
                Field::new("ts", timestamp(), false),
                Field::new("source", DataType::Utf8, true),
                Field::new("payload", DataType::Utf8, true),
                Field::new("batch_id", DataType::Utf8, false),
                Field::new("ingested_at", timestamp(), false),
            ]))
        })
        .clone()
}

/// The Arrow schema of `nextesy.quarantine` rows (same as `schema.QUARANTINE_ARROW`).
pub fn quarantine_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("batch_id", DataType::Utf8, false),
                Field::new("record_index", DataType::Int64, false),
                Field::new("reason", DataType::Utf8, false),
                Field::new("detail", DataType::Utf8, true),
                Field::new("raw", DataType::Utf8, true),
                Field::new("quarantined_at", timestamp(), false),
            ]))
        })
        .clone()
}

fn zstd(level: i32) -> Result<Compression> {
    Ok(Compression::ZSTD(ZstdLevel::try_new(level)?))
}

/// Writer settings for data files: the float column byte-split and unencoded by dictionary.
pub fn data_properties(options: &Options) -> Result<WriterProperties> {
    let element = ColumnPath::from(vec![
        "vector".to_string(),
        "list".to_string(),
        "element".to_string(),
    ]);
    Ok(WriterProperties::builder()
        .set_compression(zstd(options.zstd_level)?)
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("model"), true)
        .set_column_dictionary_enabled(ColumnPath::from("source"), true)
        .set_column_dictionary_enabled(ColumnPath::from("batch_id"), true)
        // Chunk statistics on the floats too: pyiceberg's add_files reads every column's.
        .set_column_encoding(element, Encoding::BYTE_STREAM_SPLIT)
        .set_created_by(format!("nextesy-native {}", env!("CARGO_PKG_VERSION")))
        .build())
}

fn create_file(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(File::create(path)?)
}

/// Rows handed to the Parquet encoder at a time (see [`OpenRowGroup::write`]).
const WRITE_SLICE_ROWS: usize = 2048;

/// Output is written in pieces this large: the page writer's own 8 KiB buffer passes most page
/// writes straight through, and many small writes cost the kernel far more than a few big ones.
const FILE_BUFFER_BYTES: usize = 4 << 20;

/// One column chunk of an encoded row group: from arrow-rs's column writer, or the hand-written
/// `vector` column with its bytes.
enum EncodedColumn {
    Arrow(ArrowColumnChunk),
    Vector(Pages, ColumnCloseResult),
}

/// One row group, encoded and compressed, waiting to be appended to its day's file.
pub struct EncodedRowGroup {
    rows: u64,
    chunks: Vec<EncodedColumn>,
}

/// Starts row groups of the data-file schema; one is shared by all encoder threads (every data
/// file has the same schema and writer properties), so row groups are encoded in parallel and
/// only appended to their files in order.
pub struct RowGroupEncoder {
    factory: ArrowRowGroupWriterFactory,
    vector_descr: ColumnDescPtr,
    dims: usize,
    zstd_level: i32,
    /// Where each row group's vector pages wait for the appender, in an unnamed temporary file.
    spill_dir: PathBuf,
}

/// The schema field (and leaf column) of `vector`.
const VECTOR_FIELD: usize = 2;

impl RowGroupEncoder {
    /// `spill_dir`: a directory on the output's file system (see [`VectorColumn`]'s module).
    pub fn new(options: &Options, spill_dir: &Path) -> Result<Self> {
        let props = data_properties(options)?;
        let (writer, factory) =
            ArrowWriter::try_new(std::io::sink(), embeddings_schema(), Some(props))?
                .into_serialized_writer()?;
        let vector_descr = writer.schema_descr().column(VECTOR_FIELD);
        debug_assert_eq!(vector_descr.path().string(), "vector.list.element");
        Ok(RowGroupEncoder {
            factory,
            vector_descr,
            dims: options.dims,
            zstd_level: options.zstd_level,
            spill_dir: spill_dir.to_path_buf(),
        })
    }

    /// A new row group to encode slab by slab.
    pub fn start(&self) -> Result<OpenRowGroup> {
        let mut writers = self.factory.create_column_writers(0)?;
        // The vector leaf is written by `VectorColumn`; its arrow-rs writer is never used.
        drop(writers.remove(VECTOR_FIELD));
        Ok(OpenRowGroup {
            writers,
            vector: VectorColumn::new(
                self.vector_descr.clone(),
                self.dims,
                self.zstd_level,
                tempfile::tempfile_in(&self.spill_dir).map_err(|e| {
                    Error::Io(format!(
                        "cannot create a temporary file in {}: {e}",
                        self.spill_dir.display()
                    ))
                })?,
            )?,
            rows: 0,
        })
    }
}

/// A row group being encoded: its pages are compressed as slabs arrive.
pub struct OpenRowGroup {
    /// The column writers of every leaf but the vector's, in schema order.
    writers: Vec<ArrowColumnWriter>,
    vector: VectorColumn,
    rows: u64,
}

impl OpenRowGroup {
    /// Encodes `slab` as the row group's next rows. The other columns go to arrow-rs in slices:
    /// it materialises levels for what it is given, and small slices keep those small.
    pub fn write(&mut self, slab: &RecordBatch) -> Result<()> {
        let schema = embeddings_schema();
        let vector = slab.column(VECTOR_FIELD).as_list::<i32>();
        let offsets = vector.value_offsets();
        let (first, last) = (offsets[0] as usize, offsets[slab.num_rows()] as usize);
        let floats = vector.values().as_primitive::<Float32Type>().values();
        self.vector.write(&floats[first..last])?;
        let mut offset = 0;
        while offset < slab.num_rows() {
            let len = WRITE_SLICE_ROWS.min(slab.num_rows() - offset);
            let part = slab.slice(offset, len);
            let mut leaves = self.writers.iter_mut();
            for (i, (field, column)) in schema.fields().iter().zip(part.columns()).enumerate() {
                if i == VECTOR_FIELD {
                    continue;
                }
                for leaf in compute_leaves(field, column)? {
                    leaves
                        .next()
                        .expect("one column writer per leaf")
                        .write(&leaf)?;
                }
            }
            offset += len;
        }
        self.rows += slab.num_rows() as u64;
        Ok(())
    }

    pub fn finish(self) -> Result<EncodedRowGroup> {
        let mut chunks = self
            .writers
            .into_iter()
            .map(|w| w.close().map(EncodedColumn::Arrow))
            .collect::<parquet::errors::Result<Vec<_>>>()?;
        let (pages, close) = self.vector.finish()?;
        chunks.insert(VECTOR_FIELD, EncodedColumn::Vector(pages, close));
        Ok(EncodedRowGroup {
            rows: self.rows,
            chunks,
        })
    }
}

/// One day's data file, open for row groups.
pub struct DayWriter {
    path: PathBuf,
    day: String,
    rows: u64,
    writer: SerializedFileWriter<BufWriter<File>>,
}

impl DayWriter {
    pub fn create(path: &Path, day: String, options: &Options) -> Result<Self> {
        let file = BufWriter::with_capacity(FILE_BUFFER_BYTES, create_file(path)?);
        let (writer, _) =
            ArrowWriter::try_new(file, embeddings_schema(), Some(data_properties(options)?))?
                .into_serialized_writer()?;
        Ok(DayWriter {
            path: path.to_path_buf(),
            day,
            rows: 0,
            writer,
        })
    }

    /// Appends an encoded row group as the file's next one.
    pub fn append(&mut self, group: EncodedRowGroup) -> Result<()> {
        let mut row_group = self.writer.next_row_group()?;
        for chunk in group.chunks {
            match chunk {
                EncodedColumn::Arrow(chunk) => chunk.append_to_row_group(&mut row_group)?,
                EncodedColumn::Vector(pages, close) => row_group.append_column(&pages, close)?,
            }
        }
        row_group.close()?;
        self.rows += group.rows;
        Ok(())
    }

    pub fn finish(self) -> Result<DataFile> {
        // Writes the footer; the file buffer is flushed (and errors seen) before the size is read.
        self.writer
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        let bytes = fs::metadata(&self.path)?.len();
        Ok(DataFile {
            path: self.path,
            day: self.day,
            rows: self.rows,
            bytes,
        })
    }
}

const REJECTS_ROW_GROUP_BYTES: usize = 64 << 20;

/// The rejects of a conversion, streamed into a Parquet file created on the first reject.
pub struct RejectsWriter {
    path: PathBuf,
    batch_id: String,
    at: i64,
    writer: Option<ArrowWriter<File>>,
}

impl RejectsWriter {
    pub fn new(path: &Path, options: &Options) -> Self {
        RejectsWriter {
            path: path.to_path_buf(),
            batch_id: options.batch_id.clone(),
            at: options.ingested_at,
            writer: None,
        }
    }

    pub fn write(&mut self, rejects: Vec<Reject>) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let props = WriterProperties::builder()
                .set_compression(zstd(3)?)
                .build();
            self.writer = Some(ArrowWriter::try_new(
                create_file(&self.path)?,
                quarantine_schema(),
                Some(props),
            )?);
        }
        let n = rejects.len();
        let mut index = Vec::with_capacity(n);
        let mut reason = Vec::with_capacity(n);
        let mut detail = Vec::with_capacity(n);
        let mut raw = Vec::with_capacity(n);
        for r in rejects {
            index.push(r.index as i64);
            reason.push(r.reason.code());
            detail.push(r.detail);
            raw.push(r.raw);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.batch_id.as_str(); n])),
            Arc::new(Int64Array::from(index)),
            Arc::new(StringArray::from(reason)),
            Arc::new(StringArray::from(detail)),
            Arc::new(StringArray::from(raw)),
            Arc::new(TimestampMicrosecondArray::from(vec![self.at; n]).with_timezone("UTC")),
        ];
        let batch = RecordBatch::try_new(quarantine_schema(), columns)?;
        let writer = self.writer.as_mut().expect("created above");
        writer.write(&batch)?;
        // A file of rejects (every record a duplicate, say) must not pile up in memory.
        if writer.in_progress_size() > REJECTS_ROW_GROUP_BYTES {
            writer.flush()?;
        }
        Ok(())
    }

    /// Closes the file; `None` if there were no rejects (and so no file).
    pub fn finish(self) -> Result<Option<PathBuf>> {
        match self.writer {
            Some(w) => {
                w.close()?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}
