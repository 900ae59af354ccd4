//! Reads TOML tables key by key, collecting every problem with its file, line and key path
//! instead of stopping at the first (serde's `deny_unknown_fields` reports one and gives up).

use std::cell::RefCell;
use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use crate::ConfigProblem;

/// One parsed file and the problems found in it so far.
pub(crate) struct SourceFile {
    pub(crate) name: String,
    text: String,
    pub(crate) problems: RefCell<Vec<ConfigProblem>>,
}

impl SourceFile {
    pub(crate) fn new(name: &str, text: String) -> SourceFile {
        SourceFile { name: name.to_string(), text, problems: RefCell::new(Vec::new()) }
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.text.len());
        Some(self.text[..start].bytes().filter(|byte| *byte == b'\n').count() + 1)
    }

    pub(crate) fn problem(&self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.problems.borrow_mut().push(ConfigProblem {
            file: self.name.clone(),
            line: self.line_of(span),
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// A table being read: remembers which keys were consumed so the rest can be reported.
pub(crate) struct TableReader<'a> {
    pub(crate) file: &'a SourceFile,
    table: &'a dyn TableLike,
    span: Option<Range<usize>>,
    pub(crate) path: String,
    used: RefCell<Vec<&'static str>>,
}

impl<'a> TableReader<'a> {
    pub(crate) fn new(
        file: &'a SourceFile,
        table: &'a dyn TableLike,
        span: Option<Range<usize>>,
        path: String,
    ) -> Self {
        TableReader { file, table, span, path, used: RefCell::new(Vec::new()) }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn item(&self, key: &'static str) -> Option<&'a Item> {
        self.used.borrow_mut().push(key);
        self.table.get(key)
    }

    pub(crate) fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .get(key)
            .and_then(item_span)
            .or_else(|| self.table.key(key).and_then(|key| key.span()))
            .or(self.span.clone())
    }

    pub(crate) fn problem(&self, key: &str, message: impl Into<String>) {
        self.file.problem(self.span_of(key), &self.key_path(key), message);
    }

    /// Reports a problem about the table as a whole.
    pub(crate) fn table_problem(&self, message: impl Into<String>) {
        self.file.problem(self.span.clone(), &self.path, message);
    }

    pub(crate) fn string(&self, key: &'static str) -> Option<String> {
        let item = self.item(key)?;
        match item.as_str() {
            Some(text) => Some(text.to_string()),
            None => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    /// Whether the key holds a plain string (marks it as read).
    pub(crate) fn is_string(&self, key: &'static str) -> bool {
        self.item(key).is_some_and(|item| item.as_str().is_some())
    }

    /// Whether the key is missing altogether.
    pub(crate) fn string_is_absent(&self, key: &str) -> bool {
        self.table.get(key).is_none()
    }

    pub(crate) fn required_string(&self, key: &'static str) -> Option<String> {
        let value = self.string(key);
        if value.is_none() && self.table.get(key).is_none() {
            self.problem(key, "is required");
        }
        value
    }

    pub(crate) fn integer(&self, key: &'static str, range: Range<i64>) -> Option<i64> {
        let item = self.item(key)?;
        match item.as_integer() {
            Some(number) if range.contains(&number) => Some(number),
            Some(_) => {
                self.problem(key, format!("must be from {} to {}", range.start, range.end - 1));
                None
            }
            None => {
                self.problem(key, "must be a whole number");
                None
            }
        }
    }

    pub(crate) fn boolean(&self, key: &'static str) -> Option<bool> {
        let item = self.item(key)?;
        let flag = item.as_bool();
        if flag.is_none() {
            self.problem(key, "must be true or false");
        }
        flag
    }

    pub(crate) fn strings(&self, key: &'static str) -> Vec<String> {
        let Some(item) = self.item(key) else { return Vec::new() };
        let Some(array) = item.as_array() else {
            self.problem(key, "must be an array of strings");
            return Vec::new();
        };
        let mut texts = Vec::new();
        for (index, value) in array.iter().enumerate() {
            match value.as_str() {
                Some(text) => texts.push(text.to_string()),
                None => {
                    self.file.problem(value.span(), &format!("{}[{index}]", self.key_path(key)), "must be a string")
                }
            }
        }
        texts
    }

    /// A sub-table (`[a.b]` or `b = { ... }`).
    pub(crate) fn table(&self, key: &'static str) -> Option<TableReader<'a>> {
        let item = self.item(key)?;
        match item.as_table_like() {
            Some(table) => Some(TableReader::new(self.file, table, item_span(item), self.key_path(key))),
            None => {
                self.problem(key, "must be a table");
                None
            }
        }
    }

    /// An array of tables (`[[people]]` or `people = [{ ... }]`).
    pub(crate) fn tables(&self, key: &'static str) -> Vec<TableReader<'a>> {
        let Some(item) = self.item(key) else { return Vec::new() };
        let path = self.key_path(key);
        if let Some(array) = item.as_array_of_tables() {
            return array
                .iter()
                .enumerate()
                .map(|(index, table)| TableReader::new(self.file, table, table.span(), format!("{path}[{index}]")))
                .collect();
        }
        if let Some(array) = item.as_array() {
            let mut readers = Vec::new();
            for (index, value) in array.iter().enumerate() {
                match value {
                    Value::InlineTable(table) => {
                        readers.push(TableReader::new(self.file, table, table.span(), format!("{path}[{index}]")))
                    }
                    other => self.file.problem(other.span(), &format!("{path}[{index}]"), "must be a table"),
                }
            }
            return readers;
        }
        self.problem(key, "must be an array of tables");
        Vec::new()
    }

    /// Reports every key that no reader asked for.
    pub(crate) fn finish(&self) {
        let used = self.used.borrow();
        for (key, _) in self.table.iter() {
            if !used.contains(&key) {
                let span = self.table.key(key).and_then(|key| key.span()).or_else(|| self.span.clone());
                self.file.problem(span, &self.key_path(key), "unknown key");
            }
        }
    }

    /// All keys and their items, for free-form maps such as EDR ids.
    pub(crate) fn entries(&self, key: &'static str) -> Vec<(String, String)> {
        let Some(table) = self.table(key) else { return Vec::new() };
        let mut entries = Vec::new();
        for (name, item) in table.table.iter() {
            match item.as_str() {
                Some(text) => entries.push((name.to_string(), text.to_string())),
                None => self.file.problem(item_span(item), &table.key_path(name), "must be a string"),
            }
        }
        entries
    }
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(value) => value.span(),
        Item::Table(table) => table.span(),
        Item::ArrayOfTables(array) => array.iter().next().and_then(|table| table.span()),
        Item::None => None,
    }
}
