//! Throughput of the vector-cell parser on the CSV benchmark's cells, in ns per float.
//!
//!     cargo run --release --example vector_parse -- ../bench/data/vectors-200000x768-s7.csv [rows]
//!
//! The checksum of the floats' bits shows that two builds parse the cells alike.
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("a CSV path");
    let rows: usize = std::env::args()
        .nth(2)
        .map_or(20_000, |s| s.parse().unwrap());
    let data = std::fs::read(&path).unwrap();
    let text = std::str::from_utf8(&data[..data.len().min(rows * 10_000)])
        .unwrap_or_else(|e| std::str::from_utf8(&data[..e.valid_up_to()]).unwrap());
    let cells: Vec<&str> = text
        .lines()
        .skip(1)
        .take(rows)
        .filter_map(|l| {
            let a = l.find("\"[")?;
            let b = l.rfind("]\"")?;
            Some(&l[a + 1..b + 1])
        })
        .collect();
    let mut floats = Vec::with_capacity(cells.len() * 768);
    let mut best = f64::MAX;
    let mut check = 0u64;
    for _ in 0..7 {
        floats.clear();
        let t = Instant::now();
        for c in &cells {
            _native::json::parse_vector_text(c, &mut floats).unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64());
        check = floats.iter().fold(0u64, |h, f| {
            h.wrapping_mul(31).wrapping_add(u64::from(f.to_bits()))
        });
    }
    println!(
        "{} cells {} floats: {:.2} ns/float (best of 7), checksum {check:016x}",
        cells.len(),
        floats.len(),
        best * 1e9 / floats.len() as f64
    );
}
