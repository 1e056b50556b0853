//! A query's walk of a FAISS HNSW graph over 8-bit scalar-quantised codes (`IndexHNSWSQ`, `QT_8bit`),
//! read in place from the index FAISS loaded.
//!
//! FAISS scores each visited node by decoding its 768 codes to floats and multiplying them with the
//! query; it also allocates and clears a visited table the size of the index for every query. Here
//! the decoding is folded into the query once: with `x_i = vmin_i + (c_i + 0.5) / 255 * vdiff_i`,
//! `<q, x> = C + sum_i w_i c_i` with `w_i = q_i vdiff_i / 255` and a constant `C` that ranks nothing,
//! so a node costs one dot product of `w` with its codes, in integers (`w` scaled to 16 bits, the
//! bytes multiplied and summed pairwise by `vpmaddwd`). Neighbours' codes are prefetched before
//! they are scored, and the visited marks are stamps of a per-thread table that is never cleared.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// How many nodes ahead of the one being scored a walk prefetches codes: at 1M x 768, 3-8 walked in
/// 10% less time than 2 and about the same as one another, and prefetching the next candidate's
/// neighbour list as well gave nothing (bench/hot/walk.py).
const AHEAD: usize = 4;

/// The parts of a FAISS `HNSW` and its `IndexScalarQuantizer` storage a walk reads.
pub struct Graph<'a> {
    /// Every node's neighbour lists, all levels, `-1`-padded (`HNSW::neighbors`).
    pub neighbors: &'a [i32],
    /// Node `i`'s lists start at `offsets[i]` (`HNSW::offsets`, one more than the nodes).
    pub offsets: &'a [u64],
    /// Levels per node, at least 1 (`HNSW::levels`).
    pub levels: &'a [i32],
    /// Where level `l`'s list starts within a node's lists (`HNSW::cum_nneighbor_per_level`).
    pub cum_neighbors: &'a [i32],
    pub entry_point: i32,
    pub max_level: i32,
    /// `nodes × dims` codes, row-major.
    pub codes: &'a [u8],
    pub dims: usize,
}

/// A scored node; ordered by score, then by label, so heaps break ties the same way every time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scored(i32, i32);

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0).then_with(|| other.1.cmp(&self.1))
    }
}

/// Visited marks as stamps: a node is visited in this walk when its stamp equals the walk's. A byte per
/// node (1 MB at 1M rows) keeps the table's share of the caches small; it is cleared once in 255 walks.
#[derive(Default)]
struct Visited {
    stamps: Vec<u8>,
    current: u8,
}

impl Visited {
    fn start(&mut self, nodes: usize) {
        if self.stamps.len() < nodes {
            self.stamps.resize(nodes, 0);
        }
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.current = 1;
        }
    }

    /// Mark `node`; whether it was unvisited.
    #[inline]
    fn visit(&mut self, node: usize) -> bool {
        let stamp = &mut self.stamps[node];
        let fresh = *stamp != self.current;
        *stamp = self.current;
        fresh
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

/// The query folded into the codes' decoding, `w_i = q_i * vdiff_i / 255` (see the module's doc), in
/// 16-bit integers: scaled so that the largest `|w_i|` is as large as a sum of `dims` products with
/// codes up to 255 allows in an `i32` (10,965 at 768 dims, 14 bits and a sign: the codes' own rounding
/// is 64 times coarser). A scale ranks nothing, so a walk needs only these.
pub fn fold_query(query: &[f32], vdiff: &[f32]) -> Vec<i16> {
    let w: Vec<f32> = query
        .iter()
        .zip(vdiff)
        .map(|(q, d)| q * d / 255.0)
        .collect();
    let largest = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    if largest == 0.0 || !largest.is_finite() {
        return vec![0; w.len()];
    }
    let limit = (i32::MAX as usize / (255 * w.len().max(1))).min(i16::MAX as usize) as f32;
    w.iter()
        .map(|x| (x / largest * limit).round() as i16)
        .collect()
}

/// `sum_i w_i * codes_i`, exactly (`fold_query` keeps the sum within an `i32`).
#[inline]
fn dot(w: &[i16], codes: &[u8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { dot_avx2(w, codes) };
        }
    }
    dot_portable(w, codes)
}

#[inline]
fn dot_portable(w: &[i16], codes: &[u8]) -> i32 {
    w.iter()
        .zip(codes)
        .map(|(&w, &c)| i32::from(w) * i32::from(c))
        .sum()
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_lanes(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
}

/// Sixteen codes widened to 16 bits and multiplied with their weights in one `vpmaddwd`, pairs summed
/// into 32-bit lanes: a third of the instructions of widening them to floats, and integer adds, whose
/// one-cycle latency no accumulator chain waits on.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(w: &[i16], codes: &[u8]) -> i32 {
    use std::arch::x86_64::*;
    let n = w.len().min(codes.len());
    let whole = n / 32 * 32;
    let (mut a, mut b) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let (wp, cp) = (w.as_ptr(), codes.as_ptr());
    let mut i = 0;
    while i < whole {
        let c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(cp.add(i) as *const __m128i));
        let c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(cp.add(i + 16) as *const __m128i));
        let w0 = _mm256_loadu_si256(wp.add(i) as *const __m256i);
        let w1 = _mm256_loadu_si256(wp.add(i + 16) as *const __m256i);
        a = _mm256_add_epi32(a, _mm256_madd_epi16(c0, w0));
        b = _mm256_add_epi32(b, _mm256_madd_epi16(c1, w1));
        i += 32;
    }
    let v = _mm256_add_epi32(a, b);
    let halves = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let pairs = _mm_add_epi32(halves, _mm_unpackhi_epi64(halves, halves));
    let mut total = _mm_cvtsi128_si32(_mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 1)));
    for j in whole..n {
        total += i32::from(w[j]) * i32::from(codes[j]);
    }
    total
}

/// `sum_i a_i * b_i` of two float32 vectors.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { dot_f32_avx2(a, b) };
        }
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let whole = n / 16 * 16;
    let (mut x, mut y) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    while i < whole {
        x = _mm256_fmadd_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i)), x);
        y = _mm256_fmadd_ps(
            _mm256_loadu_ps(ap.add(i + 8)),
            _mm256_loadu_ps(bp.add(i + 8)),
            y,
        );
        i += 16;
    }
    let mut total = sum_lanes(_mm256_add_ps(x, y));
    for j in whole..n {
        total += a[j] * b[j];
    }
    total
}

/// The best `k` of `candidates` (labels; negative ones are padding, skipped) scored exactly against
/// `query` on the row-major `rows` (`dims` wide): `(score, label)`, best first, ties to the lower
/// label; `Err` with the first label past the rows.
pub fn rerank(
    rows: &[f32],
    dims: usize,
    query: &[f32],
    candidates: &[i64],
    k: usize,
) -> Result<Vec<(f32, i64)>, i64> {
    let stored = rows.len().checked_div(dims).unwrap_or(0);
    let mut valid = Vec::with_capacity(candidates.len());
    for &c in candidates {
        if c >= 0 {
            if c as usize >= stored {
                return Err(c);
            }
            valid.push(c as usize);
        }
    }
    let row = |c: usize| &rows[c * dims..(c + 1) * dims];
    let mut scored: Vec<(f32, i64)> = Vec::with_capacity(valid.len());
    prefetched(
        &valid,
        AHEAD_ROWS,
        |c| bytemuck::cast_slice(row(c)),
        |c| scored.push((dot_f32(row(c), query), c as i64)),
    );
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by_key(|s| s.1);
    scored.truncate(k);
    Ok(scored)
}

/// Rows a re-rank prefetches ahead of the one it scores.
const AHEAD_ROWS: usize = 2;

/// `each` of `items` in order, the bytes of the one `ahead` places later prefetched before it: enough in
/// flight to hide the memory's latency, not so many that the prefetches queue behind one another.
#[inline]
fn prefetched<'a, T: Copy>(
    items: &[T],
    ahead: usize,
    bytes: impl Fn(T) -> &'a [u8],
    mut each: impl FnMut(T),
) {
    for &item in items.iter().take(ahead) {
        prefetch(bytes(item));
    }
    for (j, &item) in items.iter().enumerate() {
        if let Some(&next) = items.get(j + ahead) {
            prefetch(bytes(next));
        }
        each(item);
    }
}

#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut line = 0;
        while line < bytes.len() {
            // SAFETY: a prefetch is a hint; the address lies within the slice.
            unsafe { _mm_prefetch(bytes.as_ptr().add(line) as *const i8, _MM_HINT_T0) };
            line += 64;
        }
    }
}

impl Graph<'_> {
    fn nodes(&self) -> usize {
        self.levels.len()
    }

    #[inline]
    fn code(&self, node: usize) -> &[u8] {
        &self.codes[node * self.dims..(node + 1) * self.dims]
    }

    #[inline]
    fn links(&self, node: usize, level: usize) -> &[i32] {
        let start = self.offsets[node] as usize;
        let from = start + self.cum_neighbors[level] as usize;
        let to = start + self.cum_neighbors[level + 1] as usize;
        let list = &self.neighbors[from..to];
        // The list ends at its first -1.
        let used = list.iter().position(|&n| n < 0).unwrap_or(list.len());
        &list[..used]
    }

    /// The `take` best nodes (labels, best first) of a walk `ef` wide at level 0, among those `allowed`
    /// (a little-endian bitmap over labels, as FAISS's IDSelectorBitmap reads it) if given.
    pub fn search(&self, w: &[i16], ef: usize, take: usize, allowed: Option<&[u8]>) -> Vec<i32> {
        if self.nodes() == 0 || self.entry_point < 0 || take == 0 {
            return Vec::new();
        }
        let ef = ef.max(take);
        let ok =
            |node: i32| allowed.is_none_or(|bits| bits[node as usize >> 3] >> (node & 7) & 1 == 1);
        let score = |node: usize| dot(w, self.code(node));

        // Greedy descent through the upper levels.
        let mut nearest = self.entry_point as usize;
        let mut best = score(nearest);
        for level in (1..=self.max_level.max(0) as usize).rev() {
            loop {
                let before = nearest;
                let links = self.links(before, level);
                for &n in links {
                    prefetch(self.code(n as usize));
                }
                for &n in links {
                    let s = score(n as usize);
                    if s > best {
                        best = s;
                        nearest = n as usize;
                    }
                }
                if nearest == before {
                    break;
                }
            }
        }

        VISITED.with_borrow_mut(|visited| {
            visited.start(self.nodes());
            visited.visit(nearest);
            // candidates: best first; found: worst first, at most ef, allowed nodes only.
            let mut candidates = BinaryHeap::with_capacity(ef * 4);
            let mut found: BinaryHeap<std::cmp::Reverse<Scored>> =
                BinaryHeap::with_capacity(ef + 1);
            candidates.push(Scored(best, nearest as i32));
            if ok(nearest as i32) {
                found.push(std::cmp::Reverse(Scored(best, nearest as i32)));
            }
            let mut fresh = Vec::with_capacity(64);
            while let Some(Scored(s, node)) = candidates.pop() {
                if found.len() >= ef && s < found.peek().map_or(i32::MIN, |r| r.0 .0) {
                    break;
                }
                fresh.clear();
                for &n in self.links(node as usize, 0) {
                    if visited.visit(n as usize) {
                        fresh.push(n);
                    }
                }
                prefetched(
                    &fresh,
                    AHEAD,
                    |n| self.code(n as usize),
                    |n| {
                        let s = score(n as usize);
                        let worst = found.peek().map_or(i32::MIN, |r| r.0 .0);
                        if found.len() < ef || s > worst {
                            candidates.push(Scored(s, n));
                            if ok(n) {
                                found.push(std::cmp::Reverse(Scored(s, n)));
                                if found.len() > ef {
                                    found.pop();
                                }
                            }
                        }
                    },
                );
            }
            let mut out: Vec<Scored> = found.into_iter().map(|r| r.0).collect();
            out.sort_unstable_by(|a, b| b.cmp(a));
            out.truncate(take);
            out.into_iter().map(|s| s.1).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-level graph where every node links to every other: the walk must then be exact.
    fn complete(nodes: usize, dims: usize, codes: &[u8]) -> (Vec<i32>, Vec<u64>, Vec<i32>) {
        let mut neighbors = Vec::new();
        let mut offsets = vec![0u64];
        for node in 0..nodes {
            for other in 0..nodes {
                if other != node {
                    neighbors.push(other as i32);
                }
            }
            neighbors.push(-1);
            offsets.push(neighbors.len() as u64);
        }
        assert_eq!(codes.len(), nodes * dims);
        (neighbors, offsets, vec![1; nodes])
    }

    fn graph<'a>(
        nb: &'a [i32],
        off: &'a [u64],
        lv: &'a [i32],
        cum: &'a [i32],
        codes: &'a [u8],
        dims: usize,
    ) -> Graph<'a> {
        Graph {
            neighbors: nb,
            offsets: off,
            levels: lv,
            cum_neighbors: cum,
            entry_point: 0,
            max_level: 0,
            codes,
            dims,
        }
    }

    #[test]
    fn a_complete_graph_is_walked_exactly_best_first() {
        let dims = 20;
        let nodes = 30;
        // A fixed LCG: distinct scores, no ties to order.
        let mut state = 12345u32;
        let codes: Vec<u8> = (0..nodes * dims)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            })
            .collect();
        let (nb, off, lv) = complete(nodes, dims, &codes);
        let cum = [0, nodes as i32];
        let g = graph(&nb, &off, &lv, &cum, &codes, dims);
        let w: Vec<i16> = (0..dims as i16).map(|i| i * 100 - 950).collect();
        let mut want: Vec<(i32, i32)> =
            (0..nodes).map(|n| (dot(&w, g.code(n)), n as i32)).collect();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let got = g.search(&w, nodes, 5, None);
        assert_eq!(got, want[..5].iter().map(|p| p.1).collect::<Vec<_>>());
        // Only the allowed nodes are answered, though the walk passes through the others.
        let mut bitmap = vec![0u8; nodes.div_ceil(8)];
        for &(_, n) in &want[3..] {
            bitmap[n as usize / 8] |= 1 << (n % 8);
        }
        let got = g.search(&w, nodes, 5, Some(&bitmap));
        assert_eq!(got, want[3..8].iter().map(|p| p.1).collect::<Vec<_>>());
        // A second walk on the same thread starts with nothing visited.
        assert_eq!(
            g.search(&w, nodes, 5, None),
            want[..5].iter().map(|p| p.1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_vectorised_dot_product_agrees_with_the_plain_one() {
        for dims in [1, 7, 16, 33, 768] {
            let w: Vec<i16> = (0..dims)
                .map(|i| ((i * 7919) % 21931) as i16 - 10965)
                .collect();
            let c: Vec<u8> = (0..dims).map(|i| (i * 29 % 256) as u8).collect();
            assert_eq!(dot(&w, &c), dot_portable(&w, &c), "{dims}");
        }
        // The largest sum the folding allows, all codes 255 and all weights at its limit, is exact.
        let w = fold_query(&[1.0; 768], &[1.0; 768]);
        assert_eq!(w[0], 10965);
        assert_eq!(dot(&w, &[255; 768]), 10965 * 255 * 768);
    }

    #[test]
    fn a_rerank_scores_exactly_skips_padding_and_breaks_ties_by_label() {
        let dims = 3;
        let rows = [
            1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.6, 0.8, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0,
        ];
        let query = [0.0f32, 1.0, 0.0];
        // Rows 1 and 3 tie at 1.0; -1 is padding, skipped.
        let got = rerank(&rows, dims, &query, &[4, 3, -1, 2, 1, 0], 3);
        assert_eq!(got, Ok(vec![(1.0, 1), (1.0, 3), (0.8, 2)]));
        assert_eq!(rerank(&rows, dims, &query, &[-1, -1], 3), Ok(vec![]));
        // A label past the five rows is named, not skipped.
        assert_eq!(rerank(&rows, dims, &query, &[4, 9, 5], 3), Err(9));
    }

    #[test]
    fn folding_the_query_ranks_as_decoded_codes_do() {
        let vmin = [-1.0f32, 0.5, -0.25];
        let vdiff = [2.0f32, 1.0, 0.5];
        let q = [0.3f32, -0.7, 0.9];
        let w = fold_query(&q, &vdiff);
        let decoded = |c: &[u8]| -> f32 {
            (0..3)
                .map(|i| q[i] * (vmin[i] + (c[i] as f32 + 0.5) / 255.0 * vdiff[i]))
                .sum()
        };
        // The largest weight, |q_1 * vdiff_1| / 255, is scaled to the limit for 3 dims (i16::MAX).
        let scale = 32767.0 / (0.7 * 1.0 / 255.0);
        assert_eq!(w[1], -32767);
        let (a, b) = ([10u8, 200, 30], [250u8, 3, 90]);
        // The same difference between two nodes, scaled: the constant cancels.
        let folded = (dot_portable(&w, &a) - dot_portable(&w, &b)) as f32 / scale;
        let exact = decoded(&a) - decoded(&b);
        assert!(
            (folded - exact).abs() < 1e-4 * exact.abs(),
            "{folded} vs {exact}"
        );
        assert_eq!(fold_query(&[0.0; 3], &vdiff), vec![0; 3]);
    }
}
