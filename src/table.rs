//! Tables for people who open them in a spreadsheet: CSV (UTF-8 with a byte-order mark, so Excel shows Chinese
//! correctly) and XLSX, chosen by the output file's extension. Used by `sibi report` and `sibi office export`.

use std::path::Path;

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A decimal number.
    Num(f64),
    /// Nothing.
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Cell {
        Cell::Int(n)
    }
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Num(x) => format!("{x}"),
            Cell::Empty => String::new(),
        }
    }
}

/// A sheet: a header row and data rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Sheet name (XLSX).
    pub sheet: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// An empty table with these headers.
    pub fn new(sheet: &str, headers: &[&str]) -> Table {
        Table { sheet: sheet.into(), headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// As CSV bytes (with a UTF-8 byte-order mark).
    pub fn to_csv(&self) -> Result<Vec<u8>, String> {
        let mut w = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
        w.write_record(&self.headers).map_err(|e| e.to_string())?;
        for row in &self.rows {
            w.write_record(row.iter().map(Cell::text)).map_err(|e| e.to_string())?;
        }
        w.into_inner().map_err(|e| e.to_string())
    }

    /// As an XLSX workbook of one sheet.
    pub fn to_xlsx(&self) -> Result<Vec<u8>, String> {
        use rust_xlsxwriter::{Format, Workbook};
        let e = |e: rust_xlsxwriter::XlsxError| e.to_string();
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        sheet.set_name(&self.sheet).map_err(e)?;
        let bold = Format::new().set_bold();
        for (c, h) in self.headers.iter().enumerate() {
            sheet.write_string_with_format(0, c as u16, h, &bold).map_err(e)?;
        }
        for (r, row) in self.rows.iter().enumerate() {
            let r = r as u32 + 1;
            for (c, cell) in row.iter().enumerate() {
                let c = c as u16;
                match cell {
                    Cell::Text(s) => sheet.write_string(r, c, s).map(drop),
                    Cell::Int(n) => sheet.write_number(r, c, *n as f64).map(drop),
                    Cell::Num(x) => sheet.write_number(r, c, *x).map(drop),
                    Cell::Empty => Ok(()),
                }
                .map_err(e)?;
            }
        }
        sheet.autofit();
        book.save_to_buffer().map_err(e)
    }

    /// Write to `path`: XLSX if it ends in `.xlsx`, CSV otherwise.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let xlsx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
        let bytes = if xlsx { self.to_xlsx()? } else { self.to_csv()? };
        std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("通行记录", &["闸口", "人数", "体温"]);
        t.rows.push(vec!["东门, \"主\"".into(), Cell::Int(3), Cell::Num(36.5)]);
        t.rows.push(vec!["西门".into(), Cell::Int(0), Cell::Empty]);
        t
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_starts_with_a_bom() {
        let csv = String::from_utf8(sample().to_csv().unwrap()).unwrap();
        assert_eq!(csv, "\u{feff}闸口,人数,体温\n\"东门, \"\"主\"\"\",3,36.5\n西门,0,\n");
    }

    #[test]
    fn xlsx_is_a_zip_holding_the_sheet_and_its_strings() {
        let bytes = sample().to_xlsx().unwrap();
        assert_eq!(&bytes[..2], b"PK");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("xl/worksheets/sheet1.xml"), "an XLSX package");
    }
}
