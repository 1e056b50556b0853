//! The `vector` column of a row group, encoded by hand: the one column that holds nearly all of a
//! data file's bytes.
//!
//! arrow-rs's general path for a list of floats builds a definition and a repetition level and a
//! gather index for every float, copies the floats through that index into its encoder, copies them
//! again into the byte-stream-split buffer and splits them byte by byte. Here each page is written
//! straight from the rows: the repetition levels are one RLE run pair per row and the definition
//! levels one run per page (every vector has `dims` present floats), and a single pass splits the
//! floats into their four byte streams while it takes the chunk's min and max. The pages, the
//! column chunk metadata and the offset index are what arrow-rs would write for the same column
//! (data page v1, RLE levels, BYTE_STREAM_SPLIT values, chunk statistics); the appender splices the
//! chunk into its file with `append_column`.
//!
//! The compressed pages wait for the appender in a temporary file, not on the heap: they are
//! nearly all of a row group's bytes, and with several days' row groups open at once, holding
//! them in memory set the conversion's peak RSS (the same reason arrow-rs offers a temp-file
//! `PageStore` for its own writer). Written once and read back once, they stay in the page cache.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, ZstdLevel};
use parquet::column::page::PageWriter;
use parquet::column::page::{CompressedPage, Page};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{ColumnChunkMetaData, OffsetIndexBuilder, PageEncodingStats};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::engine::{Error, Result};

/// Uncompressed float bytes per data page, at most: a slab of 2048 vectors of 768 floats (6 MiB)
/// is one page. Pages this size compress a little better than arrow-rs's default 1 MiB (2566
/// against 2600 bytes per 768-d vector on the bench's data) and cost fewer headers and buffers.
const PAGE_VALUE_BYTES: usize = 8 << 20;

/// One row group's `vector.list.element` column, written page by page as rows arrive.
pub struct VectorColumn {
    descr: ColumnDescPtr,
    dims: usize,
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    /// The chunk's pages in order, each its header then its compressed data.
    pages: File,
    page_count: i32,
    /// The repetition levels of one row, RLE-encoded: a run of one 0, then a run of `dims - 1` 1s.
    row_levels: Vec<u8>,
    body: Vec<u8>,
    /// The compressed page being written, reused from page to page.
    compressed_page: Vec<u8>,
    offsets: OffsetIndexBuilder,
    rows: u64,
    values: i64,
    uncompressed: i64,
    compressed: i64,
    data_page_offset: Option<i64>,
    min_key: i32,
    max_key: i32,
}

impl VectorColumn {
    /// `pages` is an empty file, readable and writable, for the chunk's pages (see the module's
    /// docs); a temporary file in the output's directory.
    pub fn new(descr: ColumnDescPtr, dims: usize, level: i32, pages: File) -> Result<Self> {
        if descr.max_rep_level() != 1 || descr.max_def_level() != 1 || dims == 0 {
            return Err(Error::Invalid(format!(
                "the vector column must be a required list of required floats with at least one \
                 dimension (max repetition {}, max definition {}, dims {dims})",
                descr.max_rep_level(),
                descr.max_def_level()
            )));
        }
        let mut row_levels = rle_run(0, 1);
        if dims > 1 {
            row_levels.extend(rle_run(1, dims - 1));
        }
        Ok(VectorColumn {
            descr,
            dims,
            level,
            compressor: zstd::bulk::Compressor::new(level)?,
            pages,
            page_count: 0,
            row_levels,
            body: Vec::new(),
            compressed_page: Vec::new(),
            offsets: OffsetIndexBuilder::new(),
            rows: 0,
            values: 0,
            uncompressed: 0,
            compressed: 0,
            data_page_offset: None,
            min_key: i32::MAX,
            max_key: i32::MIN,
        })
    }

    /// Writes `floats` (whole rows of `dims`) as the column's next rows, in pages of about
    /// [`PAGE_VALUE_BYTES`], evenly sized within the call.
    pub fn write(&mut self, floats: &[f32]) -> Result<()> {
        debug_assert_eq!(floats.len() % self.dims, 0);
        let rows = floats.len() / self.dims;
        if rows == 0 {
            return Ok(());
        }
        let page_rows = (PAGE_VALUE_BYTES / (4 * self.dims)).max(1);
        let pages = rows.div_ceil(page_rows);
        let (base, extra) = (rows / pages, rows % pages);
        let mut start = 0;
        for page in 0..pages {
            let n = base + usize::from(page < extra);
            self.write_page(&floats[start * self.dims..(start + n) * self.dims], n)?;
            start += n;
        }
        Ok(())
    }

    fn write_page(&mut self, floats: &[f32], rows: usize) -> Result<()> {
        let body = &mut self.body;
        body.clear();
        // Data page v1: repetition levels, definition levels (each behind its byte length), values.
        body.extend_from_slice(&((self.row_levels.len() * rows) as u32).to_le_bytes());
        for _ in 0..rows {
            body.extend_from_slice(&self.row_levels);
        }
        let def = rle_run(1, floats.len());
        body.extend_from_slice(&(def.len() as u32).to_le_bytes());
        body.extend_from_slice(&def);
        let (min, max) = split_streams(floats, body);
        self.min_key = self.min_key.min(min);
        self.max_key = self.max_key.max(max);

        let compressed = &mut self.compressed_page;
        compressed.clear();
        compressed.reserve(zstd::zstd_safe::compress_bound(body.len()));
        self.compressor
            .compress_to_buffer(body.as_slice(), compressed)?;
        let data = Bytes::from(std::mem::take(compressed));
        let page = CompressedPage::new(
            Page::DataPage {
                buf: data.clone(),
                num_values: floats.len() as u32,
                encoding: Encoding::BYTE_STREAM_SPLIT,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            },
            body.len(),
        );
        let offset = self.compressed;
        let mut sink = TrackedWrite::new(HeaderOnly {
            header: Vec::with_capacity(64),
            data: data.as_ptr() as usize,
        });
        let spec = SerializedPageWriter::new(&mut sink).write_page(page)?;
        let mut header = sink.into_inner()?.header;
        // A small page's data may have gone through the writer's buffer with its header.
        header.truncate(spec.bytes_written as usize - data.len());
        self.pages.write_all(&header)?;
        self.pages.write_all(&data)?;
        self.page_count += 1;
        // The page's buffer is used again for the next one.
        self.compressed_page = Vec::from(data);
        self.offsets
            .append_offset_and_size(offset, spec.compressed_size as i32);
        self.offsets.append_row_count(rows as i64);
        self.data_page_offset.get_or_insert(offset);
        self.rows += rows as u64;
        self.values += floats.len() as i64;
        self.uncompressed += spec.uncompressed_size as i64;
        self.compressed += spec.compressed_size as i64;
        Ok(())
    }

    /// The column chunk's bytes and what `append_column` needs to splice them into a row group.
    pub fn finish(self) -> Result<(Pages, ColumnCloseResult)> {
        let encodings = [Encoding::RLE, Encoding::BYTE_STREAM_SPLIT];
        let (min, max) = (self.rows > 0)
            .then(|| (from_key(self.min_key), from_key(self.max_key)))
            .unzip();
        let statistics: Statistics = ValueStatistics::<f32>::new(min, max, None, Some(0), false)
            .with_nan_count(Some(0))
            .with_backwards_compatible_min_max(true)
            .into();
        let metadata = ColumnChunkMetaData::builder(self.descr)
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.level)?))
            .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
            .set_page_encoding_stats(vec![PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: Encoding::BYTE_STREAM_SPLIT,
                count: self.page_count,
            }])
            .set_total_compressed_size(self.compressed)
            .set_total_uncompressed_size(self.uncompressed)
            .set_num_values(self.values)
            .set_data_page_offset(self.data_page_offset.unwrap_or(0))
            .set_statistics(statistics)
            .build()?;
        let close = ColumnCloseResult {
            bytes_written: self.compressed as u64,
            rows_written: self.rows,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: Some(self.offsets.build()),
        };
        Ok((
            Pages {
                file: self.pages,
                len: self.compressed as u64,
            },
            close,
        ))
    }
}

/// Keeps what the page writer writes but the page's data itself (the write that starts at
/// `data`): the page header, so that the compressed data goes to the file without a copy. (Data
/// small enough to pass through the writer's buffer arrives with the header and is cut off.)
struct HeaderOnly {
    header: Vec<u8>,
    /// The address of the page's data.
    data: usize,
}

impl std::io::Write for HeaderOnly {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.as_ptr() as usize != self.data {
            self.header.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A column chunk's pages, in the file they were written to, read back by `append_column`.
pub struct Pages {
    file: File,
    len: u64,
}

/// Read-back buffer: the pages are several MiB each.
const READ_BUFFER_BYTES: usize = 1 << 20;

impl Length for Pages {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Pages {
    type T = BufReader<File>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<BufReader<File>> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(start))?;
        Ok(BufReader::with_capacity(READ_BUFFER_BYTES, file))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut out = Vec::with_capacity(length);
        self.get_read(start)?
            .take(length as u64)
            .read_to_end(&mut out)?;
        if out.len() != length {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "pages: {length} bytes asked at {start}, {} there",
                out.len()
            )));
        }
        Ok(out.into())
    }
}

/// An RLE run of the hybrid level encoding at bit width 1: the run length shifted left by one
/// (its low bit 0 marks a run), as a ULEB128 varint, then the value in one byte.
fn rle_run(value: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    let mut header = (len as u64) << 1;
    while header >= 0x80 {
        out.push((header as u8) | 0x80);
        header >>= 7;
    }
    out.push(header as u8);
    out.push(value);
    out
}

/// A float's bits mapped so that signed integer order is IEEE 754 total order (as arrow-rs's
/// statistics order floats); the mapping is its own inverse.
#[inline(always)]
fn total_order_key(bits: i32) -> i32 {
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

fn from_key(key: i32) -> f32 {
    f32::from_bits(total_order_key(key) as u32)
}

const LANES: usize = 16;

/// Appends `floats` to `out` byte-stream split (byte 0 of every float, then byte 1, ...), and
/// returns the smallest and largest total-order keys among them.
fn split_streams(floats: &[f32], out: &mut Vec<u8>) -> (i32, i32) {
    let n = floats.len();
    let start = out.len();
    out.resize(start + 4 * n, 0);
    let streams = &mut out[start..];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { split_streams_avx2(floats, streams) };
    }
    split_streams_into(floats, streams)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split_streams_avx2(floats: &[f32], streams: &mut [u8]) -> (i32, i32) {
    split_streams_into(floats, streams)
}

#[inline(always)]
fn split_streams_into(floats: &[f32], streams: &mut [u8]) -> (i32, i32) {
    let n = floats.len();
    let (s0, rest) = streams.split_at_mut(n);
    let (s1, rest) = rest.split_at_mut(n);
    let (s2, s3) = rest.split_at_mut(n);
    let mut mins = [i32::MAX; LANES];
    let mut maxs = [i32::MIN; LANES];
    let (chunks, tail) = floats.as_chunks::<LANES>();
    let (o0, t0) = s0.as_chunks_mut::<LANES>();
    let (o1, t1) = s1.as_chunks_mut::<LANES>();
    let (o2, t2) = s2.as_chunks_mut::<LANES>();
    let (o3, t3) = s3.as_chunks_mut::<LANES>();
    for (c, chunk) in chunks.iter().enumerate() {
        let out = [&mut o0[c], &mut o1[c], &mut o2[c], &mut o3[c]];
        split_lanes(chunk, out, &mut mins, &mut maxs);
    }
    if !tail.is_empty() {
        // The last few floats as one more group, padded with a copy of one of them (which leaves
        // the bounds as they are); only their own bytes are kept.
        let mut group = [tail[0]; LANES];
        group[..tail.len()].copy_from_slice(tail);
        let mut bytes = [[0u8; LANES]; 4];
        let [b0, b1, b2, b3] = &mut bytes;
        split_lanes(&group, [b0, b1, b2, b3], &mut mins, &mut maxs);
        for (stream, part) in [t0, t1, t2, t3].into_iter().zip(&bytes) {
            stream.copy_from_slice(&part[..tail.len()]);
        }
    }
    (
        mins.into_iter().min().expect("lanes"),
        maxs.into_iter().max().expect("lanes"),
    )
}

/// One group of floats into the four streams' bytes, and into the running bounds, lane by lane.
#[inline(always)]
fn split_lanes(
    group: &[f32; LANES],
    out: [&mut [u8; LANES]; 4],
    mins: &mut [i32; LANES],
    maxs: &mut [i32; LANES],
) {
    let [b0, b1, b2, b3] = out;
    for i in 0..LANES {
        let bits = group[i].to_bits();
        b0[i] = bits as u8;
        b1[i] = (bits >> 8) as u8;
        b2[i] = (bits >> 16) as u8;
        b3[i] = (bits >> 24) as u8;
        let key = total_order_key(bits as i32);
        mins[i] = mins[i].min(key);
        maxs[i] = maxs[i].max(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_bounds() {
        let floats: Vec<f32> = (0..37)
            .map(|i| (i as f32 - 18.5) * 0.37)
            .chain([-0.0, 0.0, f32::MIN_POSITIVE, -f32::MAX])
            .collect();
        let mut out = vec![9u8];
        let (min, max) = split_streams(&floats, &mut out);
        let n = floats.len();
        assert_eq!(out.len(), 1 + 4 * n);
        for (i, f) in floats.iter().enumerate() {
            let bytes = f.to_le_bytes();
            for b in 0..4 {
                assert_eq!(out[1 + b * n + i], bytes[b]);
            }
        }
        assert_eq!(from_key(min).to_bits(), (-f32::MAX).to_bits());
        assert_eq!(from_key(max), 17.5 * 0.37);
        let zeros = [0.0f32, -0.0];
        let (min, max) = split_streams(&zeros, &mut Vec::new());
        assert_eq!(from_key(min).to_bits(), (-0.0f32).to_bits());
        assert_eq!(from_key(max).to_bits(), 0.0f32.to_bits());
    }

    #[test]
    fn chunk_metadata_counts_each_page_once() {
        let schema = crate::writer::embeddings_schema();
        let descr = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&schema)
            .unwrap()
            .column(2);
        let dims = 768;
        let mut column = VectorColumn::new(descr, dims, 1, tempfile::tempfile().unwrap()).unwrap();
        // 2048 rows fit one page at 768 floats; 3000 rows are two, and a second write a third.
        let floats: Vec<f32> = (0..3000 * dims).map(|i| (i % 97) as f32 * 0.01).collect();
        column.write(&floats).unwrap();
        column.write(&floats[..10 * dims]).unwrap();
        let (pages, close) = column.finish().unwrap();
        let stats = close.metadata.page_encoding_stats().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].count, 3);
        let locations = &close.offset_index.as_ref().unwrap().page_locations;
        assert_eq!(locations.len(), 3);
        assert_eq!(
            locations
                .iter()
                .map(|l| l.first_row_index)
                .collect::<Vec<_>>(),
            [0, 1500, 3000]
        );
        assert_eq!(close.metadata.num_values(), 3010 * dims as i64);
        assert_eq!(pages.len(), close.bytes_written);
        assert_eq!(pages.len() as i64, close.metadata.compressed_size());
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut pages.get_read(0).unwrap(), &mut all).unwrap();
        assert_eq!(all.len() as u64, pages.len());
        let second = locations[1].offset as usize;
        assert_eq!(
            pages.get_bytes(second as u64, 8).unwrap()[..],
            all[second..second + 8]
        );
    }

    #[test]
    fn rle_runs() {
        assert_eq!(rle_run(0, 1), [0x02, 0x00]);
        assert_eq!(rle_run(1, 767), [0xFE, 0x0B, 0x01]);
        assert_eq!(rle_run(1, 63), [0x7E, 0x01]);
        assert_eq!(rle_run(1, 64), [0x80, 0x01, 0x01]);
    }
}
