//! What an experiment produces: a table for the terminal, the same data as
//! `results.json`, and a plot rendered to SVG.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One line of a plot.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    /// Chart title.
    pub title: String,
    /// X axis label, with unit.
    pub x_label: String,
    /// Y axis label, with unit.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// The outcome of one experiment run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Experiment name.
    pub experiment: String,
    /// When it ran (RFC 3339).
    pub ran_at: String,
    /// Parameters that shaped the run, for reproducing it.
    pub parameters: serde_json::Value,
    /// Column headers of the table.
    pub columns: Vec<String>,
    /// Table rows, one cell per column, already formatted.
    pub rows: Vec<Vec<String>>,
    /// The plot, if the experiment draws one.
    pub plot: Option<Plot>,
    /// What the numbers say, in a sentence or two each.
    pub findings: Vec<String>,
}

impl Report {
    /// Renders the table as aligned plain text.
    #[must_use]
    pub fn table(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain(std::iter::once(&self.columns[i]))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let _ = write!(out, "{cell:<w$}  ");
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        };
        line(&mut out, &self.columns);
        line(&mut out, &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }

    /// Writes `results.json` and, if there is a plot, `plot.svg` into `dir`.
    ///
    /// # Errors
    /// The directory or files cannot be written.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        if let Some(plot) = &self.plot {
            std::fs::write(dir.join("plot.svg"), super::svg::render(plot))?;
        }
        Ok(())
    }
}
