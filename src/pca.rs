//! Centred PCA from mergeable one-pass statistics.
//!
//! [`PcaStats`] holds `n`, `Σx` and the upper triangle of `XᵀX` in `f64`; partitions
//! compute their own and are [`merged`](PcaStats::merge) on the driver. [`PcaModel::fit`]
//! turns the covariance `(XᵀX − n·μμᵀ)/(n−1)` into eigenpairs (all eigenvalues, then
//! only the kept eigenvectors: [`crate::eigen`]), keeps `k` components (a count, or
//! the smallest count whose explained-variance ratio reaches a fraction) and projects
//! centred rows: `(x − μ)·Wᵀ`. Components are sign-normalised so that each one's entry of largest
//! magnitude is positive, which makes fits reproducible across runs and engines.

use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par, Side};
use serde::{Deserialize, Serialize};

use crate::eigen::Tridiagonal;
use crate::error::{Error, Result};

const STATS_MAGIC: &[u8; 8] = b"FLPCAST1";
/// Rows accumulated per rank-k update of `XᵀX`.
const BLOCK_ROWS: usize = 256;

/// Mergeable sufficient statistics for PCA.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaStats {
    dim: usize,
    count: u64,
    sum: Vec<f64>,
    /// Full `dim × dim` column-major storage; only the upper triangle is maintained.
    xtx: Mat<f64>,
}

impl PcaStats {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            count: 0,
            sum: vec![0.0; dim],
            xtx: Mat::zeros(dim, dim),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> &[f64] {
        &self.sum
    }

    /// Add rows (`rows.len() == n * dim`, row-major) to the statistics. Rows are
    /// converted to `f64` a block at a time and accumulated with a SYRK-style
    /// triangular rank-k update.
    pub fn update(&mut self, rows: &[f32]) -> Result<()> {
        let d = self.dim;
        if d == 0 || rows.len() % d != 0 {
            return Err(Error::Pca(format!(
                "got {} values, not a multiple of the dimension {d}",
                rows.len()
            )));
        }
        if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
            return Err(Error::Pca(format!(
                "row {} has a non-finite value ({}) at column {}",
                i / d,
                rows[i],
                i % d
            )));
        }
        let mut block = Mat::<f64>::zeros(BLOCK_ROWS, d);
        for chunk in rows.chunks(BLOCK_ROWS * d) {
            let m = chunk.len() / d;
            for (r, row) in chunk.chunks_exact(d).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    let v = f64::from(v);
                    block[(r, c)] = v;
                    self.sum[c] += v;
                }
            }
            let b = block.as_ref().subrows(0, m);
            tri_matmul(
                self.xtx.as_mut(),
                BlockStructure::TriangularUpper,
                Accum::Add,
                b.transpose(),
                BlockStructure::Rectangular,
                b,
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
            self.count += m as u64;
        }
        Ok(())
    }

    /// Fold another partition's statistics into these.
    pub fn merge(&mut self, other: &PcaStats) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::Pca(format!(
                "cannot merge statistics of dimension {} into dimension {}",
                other.dim, self.dim
            )));
        }
        self.count = self
            .count
            .checked_add(other.count)
            .ok_or_else(|| Error::Pca("cannot merge statistics: the row count overflows".into()))?;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for j in 0..self.dim {
            for i in 0..=j {
                self.xtx[(i, j)] += other.xtx[(i, j)];
            }
        }
        Ok(())
    }

    /// Sample covariance (full symmetric matrix) and mean.
    pub fn covariance(&self) -> Result<(Mat<f64>, Vec<f64>)> {
        if self.count < 2 {
            return Err(Error::Pca(format!(
                "PCA needs at least 2 rows, got {}",
                self.count
            )));
        }
        let n = self.count as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let d = self.dim;
        let cov = Mat::from_fn(d, d, |i, j| {
            let (a, b) = if i <= j { (i, j) } else { (j, i) };
            (self.xtx[(a, b)] - n * mean[a] * mean[b]) / (n - 1.0)
        });
        Ok((cov, mean))
    }

    /// A compact little-endian binary form (magic, dim, count, Σx, packed upper
    /// triangle of XᵀX) for shipping partial statistics between processes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let d = self.dim;
        let mut out = Vec::with_capacity(8 + 4 + 8 + 8 * (d + d * (d + 1) / 2));
        out.extend_from_slice(STATS_MAGIC);
        out.extend_from_slice(&(d as u32).to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        for v in &self.sum {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for j in 0..d {
            for i in 0..=j {
                out.extend_from_slice(&self.xtx[(i, j)].to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Pca(format!("not fruitlens PCA statistics: {why}"));
        if bytes.len() < 20 || &bytes[..8] != STATS_MAGIC {
            return Err(bad("wrong header"));
        }
        let d = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        if d == 0 || d > crate::limits::MAX_PCA_DIM {
            return Err(bad(&format!(
                "dimension {d} is not between 1 and {}",
                crate::limits::MAX_PCA_DIM
            )));
        }
        let count = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let expected = 20 + 8 * (d + d * (d + 1) / 2);
        if bytes.len() != expected {
            return Err(bad(&format!(
                "{} bytes, expected {expected} for dimension {d}",
                bytes.len()
            )));
        }
        let mut vals = bytes[20..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")));
        let sum: Vec<f64> = vals.by_ref().take(d).collect();
        let mut xtx = Mat::zeros(d, d);
        for j in 0..d {
            for i in 0..=j {
                xtx[(i, j)] = vals.next().expect("length checked");
            }
        }
        Ok(Self {
            dim: d,
            count,
            sum,
            xtx,
        })
    }
}

/// How many components to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KSpec {
    /// Exactly this many.
    Count(usize),
    /// The smallest k whose cumulative explained-variance ratio is ≥ this (0, 1].
    Variance(f64),
}

/// A fitted PCA: mean, components and their variances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaModel {
    pub format: String,
    pub version: u32,
    pub dim: usize,
    pub k: usize,
    pub n_samples: u64,
    pub mean: Vec<f64>,
    /// `k × dim`, row-major: component i is `components[i*dim..(i+1)*dim]`.
    pub components: Vec<f64>,
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    /// Sum of all eigenvalues (total variance of the data).
    pub total_variance: f64,
    /// How k was chosen, e.g. `"variance>=0.95"` or `"count=50"`.
    pub k_rule: String,
}

const MODEL_FORMAT: &str = "fruitlens.pca";

impl PcaModel {
    pub fn fit(stats: &PcaStats, k: KSpec) -> Result<Self> {
        let d = stats.dim();
        match k {
            KSpec::Count(c) if c == 0 || c > d => {
                return Err(Error::Pca(format!("k must be between 1 and {d}, got {c}")))
            }
            KSpec::Variance(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(Error::Pca(format!(
                    "an explained-variance fraction must be in (0, 1], got {f}"
                )))
            }
            _ => {}
        }
        let (cov, mean) = stats.covariance()?;
        // All eigenvalues first (they pick k), then only the k eigenvectors kept.
        let tri = Tridiagonal::new(cov.as_ref())?;
        let ascending = tri.eigenvalues()?;
        // Descending; tiny negative values are round-off of a rank-deficient covariance.
        let eig: Vec<f64> = ascending.iter().rev().map(|v| v.max(0.0)).collect();
        let total: f64 = eig.iter().sum();
        let ratio: Vec<f64> = if total > 0.0 {
            eig.iter().map(|v| v / total).collect()
        } else {
            vec![0.0; d]
        };
        let (k, rule) = match k {
            KSpec::Count(c) => (c, format!("count={c}")),
            KSpec::Variance(f) => {
                let mut acc = 0.0;
                let mut k = d;
                for (i, r) in ratio.iter().enumerate() {
                    acc += r;
                    // Guard against round-off just below the target.
                    if acc >= f - 1e-12 {
                        k = i + 1;
                        break;
                    }
                }
                (k, format!("variance>={f}"))
            }
        };
        // Inverse iteration pays off while few vectors are kept (its work grows with
        // k² inside groups of close eigenvalues); beyond a quarter, decompose fully.
        let fast = if 4 * k <= d {
            tri.top_eigenvectors(&ascending, k)
        } else {
            None
        };
        let vectors = match fast {
            Some(v) => v,
            None => {
                // many vectors kept, or inverse iteration failed its checks
                let evd = cov
                    .self_adjoint_eigen(Side::Lower)
                    .map_err(|e| Error::Pca(format!("eigendecomposition failed: {e:?}")))?;
                let u = evd.U();
                Mat::from_fn(d, k, |i, j| u[(i, d - 1 - j)])
            }
        };
        let mut components = Vec::with_capacity(k * d);
        for j in 0..k {
            let v = vectors.col(j);
            let (mut best, mut best_abs) = (0.0, -1.0);
            for i in 0..d {
                if v[i].abs() > best_abs {
                    best_abs = v[i].abs();
                    best = v[i];
                }
            }
            let sign = if best < 0.0 { -1.0 } else { 1.0 };
            components.extend((0..d).map(|i| sign * v[i]));
        }
        Ok(Self {
            format: MODEL_FORMAT.into(),
            version: 1,
            dim: d,
            k,
            n_samples: stats.count(),
            mean,
            components,
            explained_variance: eig[..k].to_vec(),
            explained_variance_ratio: ratio[..k].to_vec(),
            total_variance: total,
            k_rule: rule,
        })
    }

    /// Project rows (`n * dim`, row-major) to `n * k` centred scores.
    pub fn transform(&self, rows: &[f32]) -> Result<Vec<f32>> {
        let d = self.dim;
        if rows.len() % d != 0 {
            return Err(Error::Pca(format!(
                "got {} values, not a multiple of the PCA dimension {d}",
                rows.len()
            )));
        }
        let n = rows.len() / d;
        let centred = Mat::from_fn(n, d, |r, c| f64::from(rows[r * d + c]) - self.mean[c]);
        let w = MatRef::from_row_major_slice(&self.components, self.k, d);
        let mut scores = Mat::<f64>::zeros(n, self.k);
        faer::linalg::matmul::matmul(
            scores.as_mut(),
            Accum::Replace,
            centred.as_ref(),
            w.transpose(),
            1.0,
            Par::Seq,
        );
        let mut out = Vec::with_capacity(n * self.k);
        for r in 0..n {
            for c in 0..self.k {
                out.push(scores[(r, c)] as f32);
            }
        }
        Ok(out)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("PCA model serialises")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let m: PcaModel = serde_json::from_str(text)
            .map_err(|e| Error::Pca(format!("not a fruitlens PCA model file: {e}")))?;
        if m.format != MODEL_FORMAT {
            return Err(Error::Pca(format!(
                "not a fruitlens PCA model file (format {:?})",
                m.format
            )));
        }
        if m.version != 1 {
            return Err(Error::Pca(format!(
                "PCA model file version {} is newer than this fruitlens understands (1)",
                m.version
            )));
        }
        let ok = m.mean.len() == m.dim
            && m.components.len() == m.k * m.dim
            && m.explained_variance.len() == m.k
            && m.explained_variance_ratio.len() == m.k;
        if !ok {
            return Err(Error::Pca(
                "PCA model file is inconsistent: array lengths do not match dim and k".into(),
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers (xorshift), no extra dependency.
    fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        // Correlated columns with decreasing scales.
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let base = next();
            for c in 0..d {
                out.push((3.0 + base * (d - c) as f64 + next() / (c + 1) as f64) as f32);
            }
        }
        out
    }

    fn naive_cov(x: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
        let n = x.len() / d;
        let mut mean = vec![0.0; d];
        for r in x.chunks(d) {
            for c in 0..d {
                mean[c] += f64::from(r[c]) / n as f64;
            }
        }
        let mut cov = vec![0.0; d * d];
        for r in x.chunks(d) {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j])
                        / (n as f64 - 1.0);
                }
            }
        }
        (mean, cov)
    }

    #[test]
    fn covariance_matches_two_pass_formula() {
        let d = 7;
        let x = data(600, d, 1);
        let mut st = PcaStats::new(d);
        st.update(&x).unwrap();
        let (cov, mean) = st.covariance().unwrap();
        let (m2, c2) = naive_cov(&x, d);
        for i in 0..d {
            assert!((mean[i] - m2[i]).abs() < 1e-10);
            for j in 0..d {
                assert!((cov[(i, j)] - c2[i * d + j]).abs() < 1e-9, "{i},{j}");
            }
        }
    }

    #[test]
    fn hostile_statistics_are_refused() {
        let mut bytes = STATS_MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        let err = PcaStats::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("not between 1 and 16384"), "{err}");
        let mut big = PcaStats::new(2);
        big.count = u64::MAX;
        let one = PcaStats::new(2);
        assert!(big.clone().merge(&one).is_ok());
        let mut again = big.clone();
        assert!(again
            .merge(&big)
            .unwrap_err()
            .to_string()
            .contains("overflows"));
    }

    #[test]
    fn merged_partitions_equal_one_pass() {
        let d = 5;
        let x = data(1000, d, 2);
        let mut whole = PcaStats::new(d);
        whole.update(&x).unwrap();
        let mut a = PcaStats::new(d);
        a.update(&x[..300 * d]).unwrap();
        let mut b = PcaStats::new(d);
        b.update(&x[300 * d..]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 1000);
        let (ca, _) = a.covariance().unwrap();
        let (cw, _) = whole.covariance().unwrap();
        for i in 0..d {
            for j in 0..d {
                assert!((ca[(i, j)] - cw[(i, j)]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn stats_bytes_roundtrip() {
        let mut st = PcaStats::new(4);
        st.update(&data(10, 4, 3)).unwrap();
        let back = PcaStats::from_bytes(&st.to_bytes()).unwrap();
        assert_eq!(back, st);
        assert!(PcaStats::from_bytes(b"nonsense").is_err());
        assert!(PcaStats::from_bytes(&st.to_bytes()[..50]).is_err());
    }

    #[test]
    fn fit_recovers_eigenpairs_and_projection_is_centred() {
        let d = 6;
        let x = data(500, d, 4);
        let mut st = PcaStats::new(d);
        st.update(&x).unwrap();
        let m = PcaModel::fit(&st, KSpec::Count(3)).unwrap();
        let (cov, _) = st.covariance().unwrap();
        for c in 0..3 {
            let w = &m.components[c * d..(c + 1) * d];
            // cov · w = λ w
            for i in 0..d {
                let cw: f64 = (0..d).map(|j| cov[(i, j)] * w[j]).sum();
                assert!((cw - m.explained_variance[c] * w[i]).abs() < 1e-8);
            }
            let norm: f64 = w.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-10);
        }
        assert!(m.explained_variance.windows(2).all(|p| p[0] >= p[1]));
        let scores = m.transform(&x).unwrap();
        for c in 0..3 {
            let mean: f64 = scores
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / 500.0;
            assert!(mean.abs() < 1e-4, "component {c} mean {mean}");
        }
    }

    #[test]
    fn variance_fraction_picks_smallest_k() {
        let d = 8;
        let mut st = PcaStats::new(d);
        st.update(&data(400, d, 5)).unwrap();
        let full = PcaModel::fit(&st, KSpec::Count(d)).unwrap();
        let cum: Vec<f64> = full
            .explained_variance_ratio
            .iter()
            .scan(0.0, |a, r| {
                *a += r;
                Some(*a)
            })
            .collect();
        let m = PcaModel::fit(&st, KSpec::Variance(0.95)).unwrap();
        assert!(cum[m.k - 1] >= 0.95 - 1e-12);
        if m.k > 1 {
            assert!(cum[m.k - 2] < 0.95);
        }
        assert_eq!(PcaModel::fit(&st, KSpec::Variance(1.0)).unwrap().k, d);
        assert!(PcaModel::fit(&st, KSpec::Variance(0.0)).is_err());
        assert!(PcaModel::fit(&st, KSpec::Count(9)).is_err());
    }

    #[test]
    fn json_roundtrip_and_validation() {
        let mut st = PcaStats::new(3);
        st.update(&data(50, 3, 6)).unwrap();
        let m = PcaModel::fit(&st, KSpec::Count(2)).unwrap();
        assert_eq!(PcaModel::from_json(&m.to_json()).unwrap(), m);
        assert!(PcaModel::from_json("{}").is_err());
        let broken = m.to_json().replace("\"k\":2", "\"k\":3");
        assert!(PcaModel::from_json(&broken).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut st = PcaStats::new(3);
        assert!(st.update(&[1.0, 2.0]).is_err());
        assert!(st.update(&[1.0, f32::NAN, 2.0]).is_err());
        assert!(st.covariance().is_err());
        assert!(st.merge(&PcaStats::new(4)).is_err());
    }
}
