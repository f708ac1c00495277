//! The strict parser of sw-description: libconfig as we generate it and
//! nothing more (quoted strings, bounded nesting, known keys), read back
//! into a [`super::SwDescription`] so `verify` and the tests check what the
//! device will see.

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::shown;
use std::collections::HashSet;

use super::*;

#[derive(Debug)]
pub(super) enum Value {
    Str(String),
    Int(u64),
    Bool(bool),
    Group(Vec<(String, Value)>),
    List(Vec<Value>),
    Array(Vec<Value>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Group(_) => "a group",
            Value::List(_) => "a list",
            Value::Array(_) => "an array",
        }
    }
}

/// Deepest nesting of groups, lists and arrays the parser follows. What
/// we generate nests 7 deep (document, software, set, mode, images, image,
/// properties); the bound keeps a hostile `[[[[...` from exhausting the
/// stack, which would abort rather than fail.
pub(super) const MAX_DEPTH: usize = 16;

pub(super) struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    /// Open groups, lists and arrays around the current position.
    depth: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            i: 0,
            depth: 0,
        }
    }

    fn line(&self) -> usize {
        self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        match self.peek() {
            Some(b) if b == c => {
                self.i += 1;
                Ok(())
            }
            Some(b) => bail!(
                "line {}: expected '{}', found '{}'",
                self.line(),
                c as char,
                (b as char).escape_default()
            ),
            None => bail!(
                "line {}: expected '{}', found the end",
                self.line(),
                c as char
            ),
        }
    }

    fn name(&mut self) -> Result<String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || matches!(self.s[self.i], b'-' | b'_' | b'*'))
        {
            self.i += 1;
        }
        let name = &self.text[start..self.i];
        ensure!(
            name.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*'),
            "line {}: expected a setting name",
            self.line()
        );
        Ok(name.to_owned())
    }

    pub(super) fn document(mut self) -> Result<Value> {
        let mut settings = Vec::new();
        while self.peek().is_some() {
            settings.push(self.setting()?);
        }
        Ok(Value::Group(settings))
    }

    fn setting(&mut self) -> Result<(String, Value)> {
        let name = self.name()?;
        self.expect(b'=')?;
        let value = self.value()?;
        self.expect(b';')?;
        Ok((name, value))
    }

    fn value(&mut self) -> Result<Value> {
        if matches!(self.peek(), Some(b'{' | b'(' | b'[')) {
            ensure!(
                self.depth < MAX_DEPTH,
                "line {}: nested more than {MAX_DEPTH} levels deep",
                self.line()
            );
            self.depth += 1;
            let v = self.scalar_or_nested();
            self.depth -= 1;
            return v;
        }
        self.scalar_or_nested()
    }

    fn scalar_or_nested(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'{') => {
                self.i += 1;
                let mut settings = Vec::new();
                while self.peek() != Some(b'}') {
                    ensure!(
                        self.peek().is_some(),
                        "line {}: unterminated group",
                        self.line()
                    );
                    settings.push(self.setting()?);
                }
                self.i += 1;
                Ok(Value::Group(settings))
            }
            Some(open @ (b'(' | b'[')) => {
                self.i += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                if self.peek() == Some(close) {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value()?);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            _ => {
                                self.expect(close)?;
                                break;
                            }
                        }
                    }
                }
                Ok(if open == b'(' {
                    Value::List(items)
                } else {
                    Value::Array(items)
                })
            }
            Some(b'0'..=b'9') => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let n: u64 = self.text[start..self.i]
                    .parse()
                    .with_context(|| format!("line {}: bad integer", self.line()))?;
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1;
                }
                Ok(Value::Int(n))
            }
            Some(_) => match self.name()?.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                other => bail!("line {}: unexpected {other:?}", self.line()),
            },
            None => bail!("line {}: expected a value, found the end", self.line()),
        }
    }

    fn string(&mut self) -> Result<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        let mut chars = self.text[self.i..].char_indices();
        while let Some((off, c)) = chars.next() {
            match c {
                '"' => {
                    self.i += off + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('\\' | '"'))) => out.push(e),
                    other => bail!(
                        "line {}: unsupported escape \\{}",
                        self.line(),
                        other
                            .map(|(_, c)| c.escape_default().to_string())
                            .unwrap_or_default()
                    ),
                },
                c if c.is_control() => {
                    bail!("line {}: control character {c:?} in a string", self.line())
                }
                c => out.push(c),
            }
        }
        bail!("line {}: unterminated string", self.line())
    }
}

/// Takes the settings of a group out by name, so that leftovers (unknown
/// keys) and duplicates can be reported.
pub(super) struct Fields {
    what: String,
    items: Vec<(String, Value)>,
}

impl Fields {
    pub(super) fn new(value: Value, what: &str) -> Result<Fields> {
        let items = match value {
            Value::Group(items) => items,
            other => bail!("{what} must be a group, not {}", other.kind()),
        };
        let mut seen = HashSet::new();
        for (k, _) in &items {
            ensure!(seen.insert(k.clone()), "{what}: duplicate key {k}");
        }
        Ok(Fields {
            what: what.to_owned(),
            items,
        })
    }

    fn take_opt(&mut self, key: &str) -> Option<Value> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(i).1)
    }

    fn take(&mut self, key: &str) -> Result<Value> {
        self.take_opt(key)
            .with_context(|| format!("{}: missing {key}", self.what))
    }

    fn string(&mut self, key: &str) -> Result<String> {
        match self.take(key)? {
            Value::Str(s) => Ok(s),
            other => bail!(
                "{}: {key} must be a string, not {}",
                self.what,
                other.kind()
            ),
        }
    }

    fn done(self) -> Result<()> {
        if let Some((k, _)) = self.items.first() {
            bail!("{}: unexpected key {k}", self.what);
        }
        Ok(())
    }
}

pub(super) fn from_value(root: Value) -> Result<SwDescription> {
    let mut top = Fields::new(root, "document")?;
    let software = top.take("software")?;
    top.done()?;
    let mut sw = Fields::new(software, "software")?;
    let version = sw.string("version")?;
    let name = sw.string("description")?;
    let hardware_compatibility = match sw.take("hardware-compatibility")? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s),
                other => bail!(
                    "hardware-compatibility entries must be strings, not {}",
                    other.kind()
                ),
            })
            .collect::<Result<Vec<_>>>()?,
        other => bail!(
            "hardware-compatibility must be an array, not {}",
            other.kind()
        ),
    };
    let security_version = match sw.take_opt(super::SECURITY_VERSION_KEY) {
        None => None,
        Some(Value::Int(n)) => Some(n),
        Some(other) => bail!(
            "{} must be an integer, not {}",
            super::SECURITY_VERSION_KEY,
            other.kind()
        ),
    };
    let mut collections = Vec::new();
    for (set, modes) in std::mem::take(&mut sw.items) {
        let modes = Fields::new(modes, &format!("set {set}"))?;
        for (mode, body) in modes.items {
            let what = format!("collection {set}.{mode}");
            collections.push(collection_from(set.clone(), mode, body, &what).context(what)?);
        }
    }
    Ok(SwDescription {
        name,
        version,
        hardware_compatibility,
        security_version,
        collections,
    })
}

pub(super) fn collection_from(
    set: String,
    mode: String,
    body: Value,
    what: &str,
) -> Result<Collection> {
    let mut f = Fields::new(body, what)?;
    let slot = f.string(SLOT_KEY)?;
    let images = match f.take("images")? {
        Value::List(items) => items,
        other => bail!("images must be a list, not {}", other.kind()),
    };
    let env = match f.take("bootenv")? {
        Value::List(items) => items,
        other => bail!("bootenv must be a list, not {}", other.kind()),
    };
    f.done()?;
    let mut payloads = Vec::new();
    for (i, img) in images.into_iter().enumerate() {
        payloads.push(payload_from(img).with_context(|| format!("image {}", i + 1))?);
    }
    let mut bootenv = Vec::new();
    for (i, e) in env.into_iter().enumerate() {
        let mut f = Fields::new(e, &format!("bootenv entry {}", i + 1))?;
        let name = f.string("name")?;
        let value = f.string("value")?;
        f.done()?;
        bootenv.push((name, value));
    }
    Ok(Collection {
        set,
        mode,
        slot,
        payloads,
        bootenv,
    })
}

pub(super) fn payload_from(v: Value) -> Result<Payload> {
    let mut f = Fields::new(v, "image")?;
    // Untrusted until validated below: every message shows it escaped.
    let filename = f.string("filename")?;
    let name = shown(&filename);
    f.what = format!("image {name}");
    let ty = f.string("type")?;
    let target = match ty.as_str() {
        "raw" => {
            let device = f.string("device")?;
            match f.take("installed-directly")? {
                Value::Bool(true) => {}
                _ => bail!("raw image {name} must be installed-directly = true"),
            }
            Target::Raw { device }
        }
        "rawfile" => {
            let path = f.string("path")?;
            let device = match f.take_opt("device") {
                None => None,
                Some(Value::Str(d)) => Some(d),
                Some(other) => bail!(
                    "image {name}: device must be a string, not {}",
                    other.kind()
                ),
            };
            let filesystem = match f.take_opt("filesystem") {
                None => None,
                Some(Value::Str(d)) => Some(d),
                Some(other) => bail!(
                    "image {name}: filesystem must be a string, not {}",
                    other.kind()
                ),
            };
            let mut props = Fields::new(f.take("properties")?, "properties")?;
            for key in ["atomic-install", "create-destination"] {
                ensure!(
                    props.string(key)? == "true",
                    "image {name}: property {key} must be \"true\""
                );
            }
            props.done()?;
            match (device, filesystem) {
                (None, None) => Target::File { path },
                (Some(device), Some(filesystem)) => Target::PartitionFile {
                    device,
                    filesystem,
                    path,
                },
                _ => bail!("image {name}: device and filesystem go together"),
            }
        }
        other => bail!("image {name}: unsupported type \"{}\"", shown(other)),
    };
    let size = match f.take("size")? {
        Value::Int(n) => n,
        other => bail!(
            "image {name}: size must be an integer, not {}",
            other.kind()
        ),
    };
    let sha_hex = f.string("sha256")?;
    let mut sha256 = [0u8; 32];
    ensure!(
        sha_hex.len() == 64
            && sha_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "image {name}: sha256 must be 64 lower-case hex digits"
    );
    hex::decode_to_slice(&sha_hex, &mut sha256)
        .with_context(|| format!("image {name}: bad sha256"))?;
    let compressed = match f.take_opt("compressed") {
        None => Compression::None,
        Some(Value::Str(s)) if s == "zstd" => Compression::Zstd,
        Some(Value::Str(other)) => {
            bail!(
                "image {name}: unsupported compressed = \"{}\"",
                shown(&other)
            )
        }
        Some(other) => bail!(
            "image {name}: compressed must be a string, not {}",
            other.kind()
        ),
    };
    let fit = match (f.take_opt("slotsmith-installed-size"), f.take_opt("slotsmith-capacity")) {
        (None, None) => None,
        (Some(Value::Int(installed_size)), Some(Value::Int(capacity))) => Some(Fit { installed_size, capacity }),
        _ => bail!("image {name}: slotsmith-installed-size and slotsmith-capacity go together, as integers"),
    };
    f.done()?;
    Ok(Payload {
        filename,
        sha256,
        size,
        compressed,
        target,
        fit,
    })
}
