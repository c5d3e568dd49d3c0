//! What an experiment produces: a table for the terminal, the same data as
//! `results.json` and as `report.md`, and its plots rendered to SVG.

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
    /// Draw the x axis on a log10 scale (points with x ≤ 0 are left out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_x: bool,
    /// Draw the y axis on a log10 scale (points with y ≤ 0 are left out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_y: bool,
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
    /// The plot, if the experiment draws one (`plot.svg`; the one the dashboard shows).
    pub plot: Option<Plot>,
    /// More plots, written as `plot-2.svg`, `plot-3.svg`, ….
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_plots: Vec<Plot>,
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

    /// Every plot with the name of its file: `plot.svg`, then `plot-2.svg`, ….
    #[must_use]
    pub fn plot_files(&self) -> Vec<(String, &Plot)> {
        let first = self.plot.iter().map(|p| ("plot.svg".to_owned(), p));
        let more =
            self.more_plots.iter().enumerate().map(|(i, p)| (format!("plot-{}.svg", i + 2), p));
        first.chain(more).collect()
    }

    /// The report as Markdown: the table, the findings, the parameters and the plots
    /// (as images beside it).
    #[must_use]
    pub fn markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|");
        let row = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = format!("# `girder lab {}`\n\nRan at {}.\n\n", self.experiment, self.ran_at);
        out.push_str(&row(&self.columns));
        out.push_str(&format!("|{}\n", "---|".repeat(self.columns.len())));
        for r in &self.rows {
            out.push_str(&row(r));
        }
        if !self.findings.is_empty() {
            out.push('\n');
            for finding in &self.findings {
                let _ = writeln!(out, "- {finding}");
            }
        }
        for (file, plot) in self.plot_files() {
            let _ = write!(out, "\n![{}]({file})\n", plot.title.replace(['[', ']'], ""));
        }
        let parameters = serde_json::to_string_pretty(&self.parameters).unwrap_or_default();
        let _ = write!(out, "\nParameters:\n\n```json\n{parameters}\n```\n");
        out
    }

    /// Writes `results.json`, `report.md` and a file per plot (see
    /// [`Report::plot_files`]) into `dir`.
    ///
    /// # Errors
    /// The directory or files cannot be written.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        for (file, plot) in self.plot_files() {
            std::fs::write(dir.join(file), super::svg::render(plot))?;
        }
        Ok(())
    }
}
