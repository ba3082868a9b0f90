//! Running summaries (peak, mean, minimum) of a figure, and the bounded time series kept for
//! charts: adjacent points merge once it is full, so a run of any length costs the same memory.

use std::fmt::Write as _;

use protocol::results::MetricSummary;

/// Running peak, mean and minimum of one figure, fed one sample at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accumulator {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Accumulator {
    fn default() -> Self {
        Self { n: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Accumulator {
    /// Adds one sample; NaN and infinities are ignored (a broken reading, not a figure).
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Peak, mean and minimum so far; `None` before the first sample.
    pub fn summary(&self) -> Option<MetricSummary> {
        (self.n > 0).then(|| MetricSummary {
            peak: self.max,
            mean: self.sum / self.n as f64,
            min: self.min,
            samples: u32::try_from(self.n).unwrap_or(u32::MAX),
        })
    }
}

/// Peak, mean and minimum of a recorded series; `None` when it holds no finite sample.
pub fn summarise(samples: &[f64]) -> Option<MetricSummary> {
    let mut acc = Accumulator::default();
    samples.iter().for_each(|&v| acc.add(v));
    acc.summary()
}

// ---------------------------------------------------------------------------------------------
// Downsampling
// ---------------------------------------------------------------------------------------------

/// One cell of the series: the samples merged into it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cell {
    n: u32,
    sum: f64,
    max: f64,
}

impl Cell {
    fn add(&mut self, v: f64) {
        self.max = if self.n == 0 { v } else { self.max.max(v) };
        self.sum += v;
        self.n += 1;
    }

    fn merge(self, o: Cell) -> Cell {
        match (self.n, o.n) {
            (0, _) => o,
            (_, 0) => self,
            _ => Cell { n: self.n + o.n, sum: self.sum + o.sum, max: self.max.max(o.max) },
        }
    }
}

/// One point of a downsampled series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since sampling started, of the first sample merged into this point.
    pub t_s: f64,
    /// Raw samples merged into this point.
    pub samples: u64,
    /// Mean of each column over those samples (`None`: no reading).
    pub mean: Vec<Option<f64>>,
    /// Highest value of each column over those samples.
    pub max: Vec<Option<f64>>,
}

/// A time series of fixed width holding at most `cap` points: when full, adjacent pairs merge
/// (mean and max kept) and each later point covers twice as many samples.
#[derive(Debug, Clone)]
pub struct Downsampler {
    width: usize,
    cap: usize,
    /// Raw samples per completed point.
    stride: u64,
    times: Vec<f64>,
    counts: Vec<u64>,
    /// `times.len() * width` cells, row after row.
    cells: Vec<Cell>,
    pending_t: f64,
    pending_n: u64,
    pending: Vec<Cell>,
}

impl Downsampler {
    /// A series of `width` columns keeping at most `cap` points (`cap` is raised to an even
    /// number of at least 2 so pairs always merge).
    pub fn new(width: usize, cap: usize) -> Self {
        let cap = cap.max(2).next_multiple_of(2);
        Self {
            width,
            cap,
            stride: 1,
            times: Vec::with_capacity(cap),
            counts: Vec::with_capacity(cap),
            cells: Vec::with_capacity(cap * width),
            pending_t: 0.0,
            pending_n: 0,
            pending: vec![Cell::default(); width],
        }
    }

    /// Adds one sample taken `t_s` seconds in; missing columns are `None`.
    pub fn push(&mut self, t_s: f64, values: &[Option<f64>]) {
        if self.pending_n == 0 {
            self.pending_t = t_s;
        }
        for (cell, v) in self.pending.iter_mut().zip(values) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                cell.add(v);
            }
        }
        self.pending_n += 1;
        if self.pending_n < self.stride {
            return;
        }
        self.times.push(self.pending_t);
        self.counts.push(self.pending_n);
        self.cells.append(&mut self.pending);
        self.pending = vec![Cell::default(); self.width];
        self.pending_n = 0;
        if self.times.len() >= self.cap {
            self.halve();
        }
    }

    /// Merges adjacent pairs of points, halving the resolution of everything kept so far.
    fn halve(&mut self) {
        let w = self.width;
        let pairs = self.times.len() / 2;
        for i in 0..pairs {
            let (a, b) = (2 * i, 2 * i + 1);
            self.times[i] = self.times[a];
            self.counts[i] = self.counts[a] + self.counts[b];
            for c in 0..w {
                self.cells[i * w + c] = self.cells[a * w + c].merge(self.cells[b * w + c]);
            }
        }
        self.times.truncate(pairs);
        self.counts.truncate(pairs);
        self.cells.truncate(pairs * w);
        self.stride *= 2;
    }

    /// Points held now, the partly filled last one included.
    pub fn len(&self) -> usize {
        self.times.len() + usize::from(self.pending_n > 0)
    }

    /// Whether no sample was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw samples each completed point now covers.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// The series, oldest point first, the partly filled last one included.
    pub fn points(&self) -> Vec<SeriesPoint> {
        let w = self.width;
        let row = |t_s: f64, samples: u64, cells: &[Cell]| SeriesPoint {
            t_s,
            samples,
            mean: cells.iter().map(|c| (c.n > 0).then(|| c.sum / f64::from(c.n))).collect(),
            max: cells.iter().map(|c| (c.n > 0).then_some(c.max)).collect(),
        };
        let mut out: Vec<SeriesPoint> = (0..self.times.len())
            .map(|i| row(self.times[i], self.counts[i], &self.cells[i * w..(i + 1) * w]))
            .collect();
        if self.pending_n > 0 {
            out.push(row(self.pending_t, self.pending_n, &self.pending));
        }
        out
    }

    /// The series as CSV: `t_s,samples`, then for each column its mean and `<name>_max`.
    pub fn to_csv(&self, names: &[&str]) -> String {
        let mut csv = String::from("t_s,samples");
        for n in names {
            let _ = write!(csv, ",{n},{n}_max");
        }
        csv.push('\n');
        for p in self.points() {
            let _ = write!(csv, "{:.3},{}", p.t_s, p.samples);
            for (mean, max) in p.mean.iter().zip(&p.max) {
                csv.push(',');
                csv.push_str(&mean.map(csv_number).unwrap_or_default());
                csv.push(',');
                csv.push_str(&max.map(csv_number).unwrap_or_default());
            }
            csv.push('\n');
        }
        csv
    }
}

/// A number for the CSV: whole numbers without decimals (bytes), others to 3 places.
fn csv_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
