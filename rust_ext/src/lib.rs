//! Native half of Nextesy: vector checks that run once per row on every batch.
//!
//! The Python path stays the oracle; this module must agree with it bit for bit.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

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

/// Version of the native module, so the Python side can tell which build it loaded.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(vector_stats, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
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
