//! Native half of Nextesy: the ingest engine (parse, validate and write Parquet in one streaming
//! pass) and the vector checks that run once per row.
//!
//! The Python path stays the oracle; this module must agree with it record for record.

pub mod engine;
pub mod formats;
pub mod hnsw;
pub mod json;
pub mod record;
pub mod vector_column;
pub mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, StructArray};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// Per-row results of [`vector_stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct RowStats {
    /// `true` where every component of the row is finite.
    pub finite: Vec<bool>,
    /// L2 norm of each row, accumulated in f64 (NaN for rows that are not finite).
    pub norms: Vec<f64>,
}

/// Finiteness and L2 norm of each row of a row-major `rows × dims` float32 matrix.
pub fn row_stats(values: &[f32], dims: usize) -> RowStats {
    if dims == 0 {
        return RowStats {
            finite: Vec::new(),
            norms: Vec::new(),
        };
    }
    let rows = values.len() / dims;
    let mut finite = Vec::with_capacity(rows);
    let mut norms = Vec::with_capacity(rows);
    for row in values.chunks_exact(dims) {
        let ok = row.iter().all(|v| v.is_finite());
        finite.push(ok);
        norms.push(if ok {
            row.iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
        } else {
            f64::NAN
        });
    }
    RowStats { finite, norms }
}

/// Per-row finiteness flags and L2 norms, as NumPy arrays.
type StatsArrays<'py> = (Bound<'py, PyArray1<bool>>, Bound<'py, PyArray1<f64>>);

/// `(finite, norms)` for each row of a C-contiguous 2-D float32 array, computed without the GIL.
#[pyfunction]
fn vector_stats<'py>(
    py: Python<'py>,
    vectors: PyReadonlyArray2<'py, f32>,
) -> PyResult<StatsArrays<'py>> {
    let dims = vectors.shape()[1];
    let values = vectors.as_slice().map_err(|_| {
        pyo3::exceptions::PyValueError::new_err("vectors must be a C-contiguous float32 array")
    })?;
    let stats = py.detach(|| row_stats(values, dims));
    Ok((stats.finite.into_pyarray(py), stats.norms.into_pyarray(py)))
}

pyo3::create_exception!(
    _native,
    InvalidInputError,
    PyValueError,
    "The landing file cannot be converted at all."
);

/// A file that cannot be converted becomes InvalidInputError; a failed read or write, OSError.
fn py_error(e: engine::Error) -> PyErr {
    match e {
        engine::Error::Invalid(m) => InvalidInputError::new_err(m),
        engine::Error::Io(m) => PyOSError::new_err(m),
    }
}

/// A record batch handed to Python through the Arrow PyCapsule interface (`__arrow_c_array__`).
#[pyclass(frozen)]
struct ArrowBatch {
    batch: RecordBatch,
}

#[pymethods]
impl ArrowBatch {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, Bound<'py, PyCapsule>)> {
        let _ = requested_schema; // the batch is offered as is
        let array: StructArray = self.batch.clone().into();
        let data = array.into_data();
        let schema = FFI_ArrowSchema::try_from(data.data_type())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let array = FFI_ArrowArray::new(&data);
        Ok((
            PyCapsule::new_with_value(py, schema, c"arrow_schema")?,
            PyCapsule::new_with_value(py, array, c"arrow_array")?,
        ))
    }
}

fn files_batch(files: &[engine::DataFile]) -> PyResult<RecordBatch> {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "path",
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| f.path.to_string_lossy().to_string()),
            )),
        ),
        (
            "day",
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| f.day.clone()),
            )),
        ),
        (
            "rows",
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.rows as i64),
            )),
        ),
        (
            "bytes",
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.bytes as i64),
            )),
        ),
    ];
    RecordBatch::try_from_iter(columns).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// What [`convert`] returns: the counts, and the data files as an Arrow batch.
type ConvertResult = (HashMap<&'static str, Py<PyAny>>, ArrowBatch);

/// Converts a landing file into Parquet data files (one per day) and a rejects file; the GIL is
/// released for the whole conversion.
#[pyfunction]
#[pyo3(signature = (input, format, out_dir, rejects_path, *, dims, default_model, raw_limit, batch_id,
    ingested_at_us, row_group_rows, zstd_level=1, threads=0, sidecar=None))]
#[allow(clippy::too_many_arguments)]
fn convert(
    py: Python<'_>,
    input: PathBuf,
    format: &str,
    out_dir: PathBuf,
    rejects_path: PathBuf,
    dims: usize,
    default_model: String,
    raw_limit: usize,
    batch_id: String,
    ingested_at_us: i64,
    row_group_rows: usize,
    zstd_level: i32,
    threads: usize,
    sidecar: Option<PathBuf>,
) -> PyResult<ConvertResult> {
    if dims == 0 {
        return Err(PyValueError::new_err("dims must be at least 1"));
    }
    let options = engine::Options {
        dims,
        default_model,
        raw_limit,
        batch_id,
        ingested_at: ingested_at_us,
        row_group_rows: row_group_rows.max(1),
        zstd_level,
        threads,
    };
    let format = format.to_string();
    let summary = py
        .detach(|| {
            engine::convert(
                &input,
                &format,
                sidecar.as_deref(),
                &out_dir,
                &rejects_path,
                &options,
            )
        })
        .map_err(py_error)?;
    let mut out: HashMap<&'static str, Py<PyAny>> = HashMap::new();
    out.insert(
        "rows_in",
        summary.rows_in.into_pyobject(py)?.into_any().unbind(),
    );
    out.insert(
        "rows_good",
        summary.rows_good.into_pyobject(py)?.into_any().unbind(),
    );
    out.insert(
        "rows_rejected",
        summary.rows_rejected.into_pyobject(py)?.into_any().unbind(),
    );
    out.insert(
        "reasons",
        summary.reasons.into_pyobject(py)?.into_any().unbind(),
    );
    out.insert(
        "rejects_path",
        summary
            .rejects_path
            .map(|p| p.to_string_lossy().to_string())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
    );
    out.insert(
        "norm_min",
        summary.norm_min.into_pyobject(py)?.into_any().unbind(),
    );
    out.insert(
        "norm_max",
        summary.norm_max.into_pyobject(py)?.into_any().unbind(),
    );
    out.insert(
        "norm_sum",
        summary.norm_sum.into_pyobject(py)?.into_any().unbind(),
    );
    let files = ArrowBatch {
        batch: files_batch(&summary.data_files)?,
    };
    Ok((out, files))
}

/// `(records, damaged)` of a landing file without converting it.
#[pyfunction]
#[pyo3(signature = (input, format, sidecar=None))]
fn count_records(
    py: Python<'_>,
    input: PathBuf,
    format: &str,
    sidecar: Option<PathBuf>,
) -> PyResult<(u64, Option<String>)> {
    let format = format.to_string();
    py.detach(|| engine::count_records(&input, &format, sidecar.as_deref()))
        .map_err(py_error)
}

/// `(vector, start, end)` of a JSON object body whose `vector` is a flat array of numbers: the
/// values as float32 (as NumPy converts Python's numbers) and the array's byte range in `body`.
/// `None` for any other body, which the caller parses its own way.
#[pyfunction]
fn object_vector<'py>(
    py: Python<'py>,
    body: &[u8],
) -> Option<(Bound<'py, PyArray1<f32>>, usize, usize)> {
    let text = std::str::from_utf8(body).ok()?;
    let (floats, (start, end)) = json::object_vector(text)?;
    Some((floats.into_pyarray(py), start, end))
}

/// A FAISS `IndexHNSWSQ` (8-bit codes) as [`hnsw::Graph`] walks it: the addresses of the arrays FAISS
/// holds, read in place. `owner` (the FAISS index) is kept alive with it; the index must not change
/// while this exists (the Python side drops it before adding to the graph).
#[pyclass(frozen)]
struct Sq8Graph {
    neighbors: (usize, usize),
    offsets: (usize, usize),
    levels: (usize, usize),
    codes: (usize, usize),
    cum_neighbors: Vec<i32>,
    vdiff: Vec<f32>,
    entry_point: i32,
    max_level: i32,
    dims: usize,
    _owner: Py<PyAny>,
}

/// `(address, length)` of a FAISS std::vector as its SWIG wrapper gives them.
type Region = (usize, usize);

#[pymethods]
impl Sq8Graph {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        owner: Py<PyAny>,
        neighbors: Region,
        offsets: Region,
        levels: Region,
        codes: Region,
        cum_neighbors: Vec<i32>,
        vdiff: Vec<f32>,
        entry_point: i32,
        max_level: i32,
    ) -> PyResult<Self> {
        let (nodes, dims) = (levels.1, vdiff.len());
        let problem = if offsets.1 != nodes + 1 {
            Some(format!("{} offsets for {nodes} nodes", offsets.1))
        } else if codes.1 != nodes * dims {
            Some(format!(
                "{} code bytes for {nodes} nodes of {dims} dimensions",
                codes.1
            ))
        } else if cum_neighbors.len() < 2 {
            Some("no level-0 neighbour lists".to_string())
        } else if nodes > 0 && (entry_point < 0 || entry_point as usize >= nodes) {
            Some(format!("entry point {entry_point} outside {nodes} nodes"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(PyValueError::new_err(format!(
                "not a walkable HNSW graph: {problem}"
            )));
        }
        // SAFETY: the addresses are the live arrays of `owner` (see the class doc); lengths as given.
        let graph = Sq8Graph {
            neighbors,
            offsets,
            levels,
            codes,
            cum_neighbors,
            vdiff,
            entry_point,
            max_level,
            dims,
            _owner: owner,
        };
        let offsets = unsafe { graph.slice::<u64>(graph.offsets) };
        let end = offsets.last().copied().unwrap_or(0) as usize;
        let levels = graph.max_level.max(0) as usize + 1;
        if end > graph.neighbors.1 || levels >= graph.cum_neighbors.len() {
            return Err(PyValueError::new_err(format!(
                "not a walkable HNSW graph: lists end at {end} of {} neighbours, {levels} levels of {}",
                graph.neighbors.1,
                graph.cum_neighbors.len() - 1
            )));
        }
        Ok(graph)
    }

    /// Labels of the `take` best rows (`-1` pads) of a walk `ef` wide for one unit `query`, among the
    /// rows set in `allowed` (a little-endian bitmap) if given; the GIL is released meanwhile.
    #[pyo3(signature = (query, ef, take, allowed=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: PyReadonlyArray1<'py, f32>,
        ef: usize,
        take: usize,
        allowed: Option<PyReadonlyArray1<'py, u8>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let query = query.as_slice()?;
        if query.len() != self.dims {
            return Err(PyValueError::new_err(format!(
                "query has {} values; the graph has {}-d codes",
                query.len(),
                self.dims
            )));
        }
        let nodes = self.levels.1;
        let bits = match &allowed {
            Some(a) => {
                let bits = a.as_slice()?;
                if bits.len() * 8 < nodes {
                    return Err(PyValueError::new_err(format!(
                        "allowed has {} bits for {nodes} rows",
                        bits.len() * 8
                    )));
                }
                Some(bits)
            }
            None => None,
        };
        let labels = py.detach(|| {
            // SAFETY: see the class doc.
            let graph = unsafe {
                hnsw::Graph {
                    neighbors: self.slice(self.neighbors),
                    offsets: self.slice(self.offsets),
                    levels: self.slice(self.levels),
                    cum_neighbors: &self.cum_neighbors,
                    entry_point: self.entry_point,
                    max_level: self.max_level,
                    codes: self.slice(self.codes),
                    dims: self.dims,
                }
            };
            let w = hnsw::fold_query(query, &self.vdiff);
            let mut out: Vec<i64> = graph
                .search(&w, ef, take, bits)
                .into_iter()
                .map(i64::from)
                .collect();
            out.resize(take, -1);
            out
        });
        Ok(labels.into_pyarray(py))
    }
}

impl Sq8Graph {
    /// # Safety
    /// `region` must be one of this graph's arrays, holding `T`s, alive as long as `self`.
    unsafe fn slice<T>(&self, region: Region) -> &[T] {
        if region.1 == 0 {
            return &[];
        }
        std::slice::from_raw_parts(region.0 as *const T, region.1)
    }
}

type Ranked<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<i64>>);

/// `(scores, labels)` of the best `k` of `candidates` (row labels; negative ones are padding) scored
/// exactly against `query` on the rows of `vectors`, best first, ties to the lower label; `-inf` and
/// `-1` pad a short answer. A label past the rows (a graph with more nodes than its segment has rows)
/// is an error naming it. The GIL is released meanwhile.
#[pyfunction]
fn rerank<'py>(
    py: Python<'py>,
    vectors: PyReadonlyArray2<'py, f32>,
    query: PyReadonlyArray1<'py, f32>,
    candidates: PyReadonlyArray1<'py, i64>,
    k: usize,
) -> PyResult<Ranked<'py>> {
    let dims = vectors.shape()[1];
    let rows = vectors
        .as_slice()
        .map_err(|_| PyValueError::new_err("vectors must be a C-contiguous float32 array"))?;
    let query = query.as_slice()?;
    if query.len() != dims {
        return Err(PyValueError::new_err(format!(
            "query has {} values; the rows have {dims}",
            query.len()
        )));
    }
    let candidates = candidates.as_slice()?;
    let best = py
        .detach(|| hnsw::rerank(rows, dims, query, candidates, k))
        .map_err(|past| {
            PyValueError::new_err(format!(
                "candidate label {past} is past the {} stored rows: the graph and its vectors disagree",
                rows.len().checked_div(dims).unwrap_or(0)
            ))
        })?;
    let mut scores = vec![f32::NEG_INFINITY; k];
    let mut labels = vec![-1i64; k];
    for (slot, (score, label)) in best.into_iter().enumerate() {
        scores[slot] = score;
        labels[slot] = label;
    }
    Ok((scores.into_pyarray(py), labels.into_pyarray(py)))
}

/// Version of the native module, so the Python side can tell which build it loaded.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(vector_stats, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(object_vector, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(count_records, m)?)?;
    m.add_class::<ArrowBatch>()?;
    m.add_class::<Sq8Graph>()?;
    m.add_function(wrap_pyfunction!(rerank, m)?)?;
    m.add("InvalidInputError", m.py().get_type::<InvalidInputError>())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_non_finite_rows_and_computes_norms() {
        let values = [3.0, 4.0, f32::NAN, 1.0, 0.0, f32::INFINITY, 0.0, 0.0];
        let stats = row_stats(&values, 2);
        assert_eq!(stats.finite, vec![true, false, false, true]);
        assert_eq!(stats.norms[0], 5.0);
        assert!(stats.norms[1].is_nan());
        assert_eq!(stats.norms[3], 0.0);
    }

    #[test]
    fn zero_dims_gives_no_rows() {
        assert_eq!(
            row_stats(&[], 0),
            RowStats {
                finite: vec![],
                norms: vec![]
            }
        );
    }
}
