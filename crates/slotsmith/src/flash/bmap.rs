//! Reading a block map (bmap-tools' XML, format 2.x) for `flash`.
//!
//! The writer is `slotsmith_disk::bmap`; this is the strict reader. The
//! bmap sits beside the image and is checked against `SHA256SUMS` before it
//! is parsed, but it is still treated as hostile: the file is capped, the
//! XML subset is the one bmap-tools writes (declaration, comments, elements,
//! attributes, text; no DOCTYPE, CDATA or entities, so nothing expands),
//! every number is parsed and combined with checked arithmetic, ranges must
//! be sorted, disjoint and inside the image, and the counts must agree with
//! the ranges. A bad bmap is refused with its line and element.

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use slotsmith_yaml::escape::shown;

/// The build's writer, for `bench flash`'s synthesized image: the bmap
/// XML of an image file and the image's sha256, from one read.
pub use slotsmith_disk::bmap::bmap_xml_and_sha256_parallel as write_with_sha256;

/// Largest bmap read: a 64 TiB image of 4 KiB blocks alternating data and
/// holes would need more, but nothing we build comes near.
pub const MAX_BMAP_BYTES: u64 = 64 << 20;
/// Most ranges accepted.
pub const MAX_RANGES: usize = 1 << 20;

/// A parsed, checked block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// The image size in bytes.
    pub image_size: u64,
    /// Block size in bytes (a power of two).
    pub block_size: u64,
    /// Blocks in the image (the last may be partial).
    pub blocks_count: u64,
    /// Blocks inside ranges.
    pub mapped_blocks: u64,
    /// The mapped ranges, sorted and disjoint.
    pub ranges: Vec<Range>,
}

/// One mapped range with its bytes and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First block (inclusive).
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// First byte.
    pub start: u64,
    /// One past the last byte (clamped to the image size: a final partial
    /// block contributes only the bytes that exist).
    pub end: u64,
    /// sha256 of bytes `start..end`.
    pub sha256: [u8; 32],
    /// Line of the `<Range>` in the bmap, for messages.
    pub line: usize,
}

impl Bmap {
    /// Bytes inside mapped ranges (cannot overflow: every range is inside
    /// the image, and they are disjoint).
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }
}

/// One lexical piece of the XML subset.
enum Tok<'a> {
    Open {
        name: &'a str,
        attrs: Vec<(&'a str, &'a str)>,
        empty: bool,
        at: usize,
    },
    Close {
        name: &'a str,
        at: usize,
    },
    Text {
        text: &'a str,
        at: usize,
    },
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next token. Comments and the declaration are skipped in a loop,
    /// never by recursion: a hostile bmap of 100k comments must not
    /// overflow the stack.
    fn next(&mut self) -> Result<Option<Tok<'a>>> {
        loop {
            if let Some(t) = self.next_or_skip()? {
                return Ok(t);
            }
        }
    }

    /// A token (`Some(None)` at the end), or `None` for a skipped comment
    /// or declaration.
    #[allow(clippy::option_option)]
    fn next_or_skip(&mut self) -> Result<Option<Option<Tok<'a>>>> {
        let s = self.s;
        let at = self.pos;
        let rest = &s[at..];
        if rest.is_empty() {
            return Ok(Some(None));
        }
        if !rest.starts_with('<') {
            let len = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..len];
            // No entity is ever expanded; bmap-tools writes none.
            ensure!(
                !text.contains('&'),
                "line {}: '&' (an entity) in text",
                line_of(s, at)
            );
            self.pos += len;
            return Ok(Some(Some(Tok::Text { text, at })));
        }
        if let Some(body) = rest.strip_prefix("<!--") {
            let end = body
                .find("-->")
                .with_context(|| format!("line {}: unterminated comment", line_of(s, at)))?;
            self.pos += 4 + end + 3;
            return Ok(None);
        }
        if rest.starts_with("<?") {
            // Only the XML declaration, and only first.
            ensure!(
                at == 0 && rest.starts_with("<?xml "),
                "line {}: a processing instruction other than the XML declaration",
                line_of(s, at)
            );
            let end = rest.find("?>").with_context(|| {
                format!("line {}: unterminated XML declaration", line_of(s, at))
            })?;
            self.pos += end + 2;
            return Ok(None);
        }
        if rest.starts_with("<!") {
            bail!(
                "line {}: DOCTYPE or CDATA is not part of a bmap",
                line_of(s, at)
            );
        }
        let end = rest
            .find('>')
            .with_context(|| format!("line {}: unterminated tag", line_of(s, at)))?;
        let inner = &rest[1..end];
        self.pos += end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim_end();
            check_name(name, s, at)?;
            return Ok(Some(Some(Tok::Close { name, at })));
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(i) => (i, true),
            None => (inner, false),
        };
        let name_end = inner
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(inner.len());
        let name = &inner[..name_end];
        check_name(name, s, at)?;
        let mut attrs = Vec::new();
        let mut a = inner[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a.find('=').with_context(|| {
                format!(
                    "line {}: attribute without a value in <{}>",
                    line_of(s, at),
                    shown(name)
                )
            })?;
            let key = a[..eq].trim_end();
            check_name(key, s, at)?;
            let v = a[eq + 1..].trim_start();
            let quote = v
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .with_context(|| {
                    format!(
                        "line {}: unquoted attribute {} in <{}>",
                        line_of(s, at),
                        shown(key),
                        shown(name)
                    )
                })?;
            let close = v[1..].find(quote).with_context(|| {
                format!(
                    "line {}: unterminated attribute {}",
                    line_of(s, at),
                    shown(key)
                )
            })?;
            let value = &v[1..1 + close];
            ensure!(
                !value.contains('&') && !value.contains('<'),
                "line {}: attribute {} holds '&' or '<'",
                line_of(s, at),
                shown(key)
            );
            ensure!(
                attrs.len() < 8,
                "line {}: too many attributes in <{}>",
                line_of(s, at),
                shown(name)
            );
            attrs.push((key, value));
            a = v[1 + close + 1..].trim_start();
        }
        Ok(Some(Some(Tok::Open {
            name,
            attrs,
            empty,
            at,
        })))
    }

    /// The next token that is not whitespace-only text.
    fn next_significant(&mut self) -> Result<Option<Tok<'a>>> {
        loop {
            match self.next()? {
                Some(Tok::Text { text, .. }) if text.trim().is_empty() => continue,
                other => return Ok(other),
            }
        }
    }

    /// The text of a simple element whose open tag was just read, and the
    /// byte span of its trimmed value.
    fn text_of(&mut self, element: &str, at: usize) -> Result<(&'a str, usize)> {
        let s = self.s;
        let (text, text_at) = match self.next()? {
            Some(Tok::Text { text, at }) => (text, at),
            Some(Tok::Close { name, .. }) if name == element => return Ok(("", self.pos)),
            _ => bail!("line {}: <{element}> must hold only text", line_of(s, at)),
        };
        match self.next()? {
            Some(Tok::Close { name, .. }) if name == element => {}
            _ => bail!(
                "line {}: <{element}> is not closed by </{element}>",
                line_of(s, at)
            ),
        }
        let lead = text.len() - text.trim_start().len();
        Ok((text.trim(), text_at + lead))
    }
}

fn check_name(name: &str, s: &str, at: usize) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':'),
        "line {}: bad tag or attribute name '{}'",
        line_of(s, at),
        shown(name)
    );
    Ok(())
}

fn line_of(s: &str, at: usize) -> usize {
    s.as_bytes()[..at.min(s.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A decimal number as bmap-tools writes it: digits only, no sign.
fn number(text: &str, what: &str, line: usize) -> Result<u64> {
    ensure!(
        !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()),
        "line {line}: {what} '{}' is not a number",
        shown(text)
    );
    text.parse::<u64>()
        .with_context(|| format!("line {line}: {what} '{}' does not fit 64 bits", shown(text)))
}

fn digest(text: &str, what: &str, line: usize) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    ensure!(
        text.len() == 64 && hex::decode_to_slice(text, &mut out).is_ok(),
        "line {line}: {what} '{}' is not a sha256 (64 hex digits)",
        shown(text)
    );
    Ok(out)
}

/// Parses and checks a bmap; `name` is what messages call it. Checks the
/// file checksum (`BmapFileChecksum`, over the text with itself zeroed),
/// the counts and every range against the image size the bmap states (the
/// caller compares that with the image).
pub fn parse(bytes: &[u8], name: &str) -> Result<Bmap> {
    parse_inner(bytes).with_context(|| format!("bmap {name}"))
}

fn parse_inner(bytes: &[u8]) -> Result<Bmap> {
    ensure!(
        bytes.len() as u64 <= MAX_BMAP_BYTES,
        "larger than {MAX_BMAP_BYTES} bytes"
    );
    let s = std::str::from_utf8(bytes).context("not UTF-8")?;
    let mut lx = Lexer { s, pos: 0 };
    match lx.next_significant()? {
        Some(Tok::Open {
            name: "bmap",
            attrs,
            empty: false,
            at,
        }) => {
            let version = attrs
                .iter()
                .find(|(k, _)| *k == "version")
                .map(|(_, v)| *v)
                .unwrap_or("");
            ensure!(
                version.split('.').next() == Some("2") && version.split('.').count() == 2,
                "line {}: bmap version '{}' is not 2.x (only 2.x carries sha256 checksums)",
                line_of(s, at),
                shown(version)
            );
        }
        _ => bail!("line 1: the document is not a <bmap> element"),
    }
    let mut fields: [Option<(&str, usize, usize)>; 6] = [None; 6];
    const NAMES: [&str; 6] = [
        "ImageSize",
        "BlockSize",
        "BlocksCount",
        "MappedBlocksCount",
        "ChecksumType",
        "BmapFileChecksum",
    ];
    let mut raw_ranges: Vec<(u64, u64, [u8; 32], usize)> = Vec::new();
    let mut block_map = false;
    loop {
        match lx.next_significant()? {
            Some(Tok::Close { name: "bmap", .. }) => break,
            Some(Tok::Open {
                name: "BlockMap",
                empty,
                at,
                ..
            }) => {
                ensure!(!block_map, "line {}: a second <BlockMap>", line_of(s, at));
                block_map = true;
                if !empty {
                    read_ranges(&mut lx, &mut raw_ranges)?;
                }
            }
            Some(Tok::Open {
                name,
                empty: false,
                at,
                ..
            }) => {
                let i = NAMES.iter().position(|n| *n == name).with_context(|| {
                    format!("line {}: unknown element <{}>", line_of(s, at), shown(name))
                })?;
                ensure!(
                    fields[i].is_none(),
                    "line {}: a second <{name}>",
                    line_of(s, at)
                );
                let (text, span) = lx.text_of(name, at)?;
                fields[i] = Some((text, span, line_of(s, at)));
            }
            Some(Tok::Open { name, at, .. }) => {
                bail!("line {}: empty element <{}/>", line_of(s, at), shown(name))
            }
            Some(Tok::Close { name, at }) => {
                bail!("line {}: unexpected </{}>", line_of(s, at), shown(name))
            }
            Some(Tok::Text { text, at }) => bail!(
                "line {}: unexpected text '{}'",
                line_of(s, at),
                shown(text.trim())
            ),
            None => bail!("the document ends before </bmap>"),
        }
    }
    if let Some(tok) = lx.next_significant()? {
        let at = match tok {
            Tok::Open { at, .. } | Tok::Close { at, .. } | Tok::Text { at, .. } => at,
        };
        bail!("line {}: content after </bmap>", line_of(s, at));
    }
    let field = |i: usize| fields[i].with_context(|| format!("no <{}>", NAMES[i]));
    let (t, _, l) = field(0)?;
    let image_size = number(t, "ImageSize", l)?;
    let (t, _, l) = field(1)?;
    let block_size = number(t, "BlockSize", l)?;
    ensure!(
        block_size.is_power_of_two() && (512..=1 << 20).contains(&block_size),
        "line {l}: BlockSize {block_size} is not a power of two from 512 to 1 MiB"
    );
    let (t, _, l) = field(2)?;
    let blocks_count = number(t, "BlocksCount", l)?;
    ensure!(blocks_count == image_size.div_ceil(block_size), "line {l}: BlocksCount {blocks_count} does not cover ImageSize {image_size} in blocks of {block_size}");
    let (t, _, l) = field(3)?;
    let mapped_blocks = number(t, "MappedBlocksCount", l)?;
    let (t, _, l) = field(4)?;
    ensure!(
        t == "sha256",
        "line {l}: ChecksumType '{}' is not sha256",
        shown(t)
    );
    let (t, span, l) = field(5)?;
    let file_sum = digest(t, "BmapFileChecksum", l)?;
    // The checksum is over the file with its own value replaced by zeros.
    let mut zeroed = bytes.to_vec();
    zeroed[span..span + 64].fill(b'0');
    ensure!(
        <[u8; 32]>::from(Sha256::digest(&zeroed)) == file_sum,
        "line {l}: BmapFileChecksum does not match the file (the bmap was edited or damaged)"
    );
    ensure!(block_map, "no <BlockMap>");

    let mut ranges = Vec::with_capacity(raw_ranges.len());
    let mut sum = 0u64;
    let mut next_free = 0u64;
    for (first, last, sha256, line) in raw_ranges {
        ensure!(
            first <= last,
            "line {line}: range {first}-{last} ends before it starts"
        );
        ensure!(
            last < blocks_count,
            "line {line}: range {first}-{last} reaches past the image's {blocks_count} blocks"
        );
        ensure!(
            first >= next_free,
            "line {line}: range {first}-{last} overlaps or precedes the range before it"
        );
        next_free = last + 1;
        sum = sum
            .checked_add(last - first + 1)
            .with_context(|| format!("line {line}: mapped block count overflows"))?;
        // Both fit: last < blocks_count = ceil(image_size / block_size).
        let start = first
            .checked_mul(block_size)
            .with_context(|| format!("line {line}: range start overflows"))?;
        let end = next_free
            .checked_mul(block_size)
            .map_or(image_size, |e| e.min(image_size));
        ranges.push(Range {
            first,
            last,
            start,
            end,
            sha256,
            line,
        });
    }
    let (_, _, l) = field(3)?;
    ensure!(
        sum == mapped_blocks,
        "line {l}: MappedBlocksCount {mapped_blocks} but the ranges hold {sum} blocks"
    );
    Ok(Bmap {
        image_size,
        block_size,
        blocks_count,
        mapped_blocks,
        ranges,
    })
}

fn read_ranges(lx: &mut Lexer<'_>, out: &mut Vec<(u64, u64, [u8; 32], usize)>) -> Result<()> {
    let s = lx.s;
    // Lines are counted on from the last range, not from the start of the
    // file for each one: a bmap of a million ranges stays linear.
    let mut counted = (0usize, 1usize);
    loop {
        match lx.next_significant()? {
            Some(Tok::Close {
                name: "BlockMap", ..
            }) => return Ok(()),
            Some(Tok::Open {
                name: "Range",
                attrs,
                empty: false,
                at,
            }) => {
                let line = if at >= counted.0 {
                    let bytes = &s.as_bytes()[counted.0..at.min(s.len())];
                    counted.1 + bytes.iter().filter(|b| **b == b'\n').count()
                } else {
                    line_of(s, at)
                };
                counted = (at.min(s.len()), line);
                ensure!(
                    out.len() < MAX_RANGES,
                    "line {line}: more than {MAX_RANGES} ranges"
                );
                let sum = attrs
                    .iter()
                    .find(|(k, _)| *k == "chksum")
                    .map(|(_, v)| *v)
                    .with_context(|| format!("line {line}: <Range> without chksum"))?;
                let sha = digest(sum, "chksum", line)?;
                let (text, _) = lx.text_of("Range", at)?;
                let (a, b) = match text.split_once('-') {
                    Some((a, b)) => (a.trim(), b.trim()),
                    None => (text, text),
                };
                out.push((
                    number(a, "range start", line)?,
                    number(b, "range end", line)?,
                    sha,
                    line,
                ));
            }
            Some(Tok::Open { name, at, .. }) => bail!(
                "line {}: <{}> inside <BlockMap>",
                line_of(s, at),
                shown(name)
            ),
            Some(Tok::Close { name, at }) => {
                bail!("line {}: unexpected </{}>", line_of(s, at), shown(name))
            }
            Some(Tok::Text { text, at }) => bail!(
                "line {}: unexpected text '{}'",
                line_of(s, at),
                shown(text.trim())
            ),
            None => bail!("the document ends inside <BlockMap>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn image() -> Vec<u8> {
        let size = 10 * 4096 + 100;
        (0..size).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn ours(img: &[u8], mapped: &[(u64, u64)]) -> String {
        slotsmith_disk::bmap::bmap_xml(&mut Cursor::new(img), img.len() as u64, mapped).unwrap()
    }

    /// Rewrites the file checksum after an edit, as an attacker would.
    fn resum(xml: &str) -> String {
        let start = xml.find("<BmapFileChecksum> ").unwrap() + 19;
        let zeroed = format!("{}{}{}", &xml[..start], "0".repeat(64), &xml[start + 64..]);
        let sum = hex::encode(Sha256::digest(zeroed.as_bytes()));
        format!("{}{sum}{}", &xml[..start], &xml[start + 64..])
    }

    fn err(xml: &str) -> String {
        format!("{:#}", parse(xml.as_bytes(), "t.bmap").unwrap_err())
    }

    #[test]
    fn reads_what_our_writer_writes() {
        let img = image();
        let xml = ours(
            &img,
            &[
                (0, 1),
                (3 * 4096, 5 * 4096 + 1),
                (img.len() as u64 - 1, img.len() as u64),
            ],
        );
        let b = parse(xml.as_bytes(), "t.bmap").unwrap();
        assert_eq!(b.image_size, img.len() as u64);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.blocks_count, 11);
        assert_eq!(b.mapped_blocks, 5);
        let spans: Vec<_> = b
            .ranges
            .iter()
            .map(|r| (r.first, r.last, r.start, r.end))
            .collect();
        assert_eq!(
            spans,
            [
                (0, 0, 0, 4096),
                (3, 5, 3 * 4096, 6 * 4096),
                (10, 10, 10 * 4096, img.len() as u64)
            ]
        );
        for r in &b.ranges {
            assert_eq!(
                r.sha256,
                <[u8; 32]>::from(Sha256::digest(&img[r.start as usize..r.end as usize]))
            );
        }
        assert_eq!(b.mapped_bytes(), 4 * 4096 + 100);
    }

    #[test]
    fn reads_bmaptool_style_comments_and_layout() {
        let img = image();
        let xml = ours(&img, &[(0, 4096)]).replace(
            "<bmap version=\"2.0\">",
            "<!-- written by bmaptool -->\n<bmap version=\"2.0\">\n<!-- image size -->",
        );
        let b = parse(resum(&xml).as_bytes(), "t.bmap").unwrap();
        assert_eq!(b.ranges.len(), 1);
    }

    #[test]
    fn a_bmap_of_many_comments_or_ranges_parses_without_recursion_or_rescans() {
        let img = image();
        let base = ours(&img, &[(0, 4096)]);
        // 200k comments: a recursive lexer overflows its stack on these.
        let xml = base.replace(
            "<bmap version=\"2.0\">",
            &format!("<bmap version=\"2.0\">{}", "<!---->".repeat(200_000)),
        );
        assert_eq!(
            parse(resum(&xml).as_bytes(), "t.bmap")
                .unwrap()
                .ranges
                .len(),
            1
        );

        // 300k ranges in a 25 MiB bmap: counting lines from the start of
        // the file for each range would take hours; the last range's line
        // is still right.
        let n = 300_000u64;
        let line = base.lines().find(|l| l.contains("</Range>")).unwrap();
        let ranges: String = (0..n)
            .map(|i| {
                format!(
                    "        <Range chksum=\"{}\"> {} </Range>\n",
                    "ab".repeat(32),
                    2 * i
                )
            })
            .collect();
        let xml = base
            .replace(&format!("{line}\n"), &ranges)
            .replace(
                "<ImageSize> 41060 </ImageSize>",
                &format!("<ImageSize> {} </ImageSize>", 2 * n * 4096),
            )
            .replace(
                "<BlocksCount> 11 </BlocksCount>",
                &format!("<BlocksCount> {} </BlocksCount>", 2 * n),
            )
            .replace(
                "<MappedBlocksCount> 1 </MappedBlocksCount>",
                &format!("<MappedBlocksCount> {n} </MappedBlocksCount>"),
            );
        let b = parse(resum(&xml).as_bytes(), "t.bmap").unwrap();
        assert_eq!(b.ranges.len() as u64, n);
        let last_line = xml
            .lines()
            .position(|l| l.contains(&format!("> {} </Range>", 2 * (n - 1))))
            .unwrap()
            + 1;
        assert_eq!(b.ranges.last().unwrap().line, last_line);
        assert_eq!(b.ranges[0].line, last_line + 1 - n as usize);
    }

    #[test]
    fn an_edited_bmap_fails_its_file_checksum() {
        let img = image();
        let xml = ours(&img, &[(0, 4096)]).replace("> 0 </Range>", "> 1 </Range>");
        assert!(
            err(&xml).contains("BmapFileChecksum does not match"),
            "{}",
            err(&xml)
        );
    }

    #[test]
    fn hostile_sizes_and_ranges_are_refused() {
        let img = image();
        let base = ours(&img, &[(0, 4096), (5 * 4096, 6 * 4096)]);
        let cases: [(&str, &str, &str); 9] = [
            ("> 5 </Range>", "> 11 </Range>", "reaches past the image"),
            ("> 5 </Range>", "> 0 </Range>", "overlaps or precedes"),
            ("> 5 </Range>", "> 5-3 </Range>", "ends before it starts"),
            (
                "> 5 </Range>",
                "> 99999999999999999999 </Range>",
                "does not fit 64 bits",
            ),
            ("> 5 </Range>", "> -5 </Range>", "is not a number"),
            (
                "<ImageSize> 41060 </ImageSize>",
                "<ImageSize> 18446744073709551615 </ImageSize>",
                "BlocksCount 11 does not cover",
            ),
            (
                "<BlockSize> 4096 </BlockSize>",
                "<BlockSize> 4095 </BlockSize>",
                "not a power of two",
            ),
            (
                "<MappedBlocksCount> 2 </MappedBlocksCount>",
                "<MappedBlocksCount> 3 </MappedBlocksCount>",
                "the ranges hold 2 blocks",
            ),
            (
                "<ChecksumType> sha256 </ChecksumType>",
                "<ChecksumType> sha1 </ChecksumType>",
                "is not sha256",
            ),
        ];
        for (from, to, want) in cases {
            assert!(base.contains(from), "{from}");
            let e = err(&resum(&base.replace(from, to)));
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.starts_with("bmap t.bmap: line "), "{e}");
        }
    }

    #[test]
    fn hostile_xml_is_refused() {
        let img = image();
        let base = ours(&img, &[(0, 4096)]);
        let cases = [
            (
                "<?xml version=\"1.0\" ?>\n",
                "<?xml version=\"1.0\" ?>\n<!DOCTYPE bmap [<!ENTITY a \"b\">]>\n",
                "DOCTYPE",
            ),
            ("<BlockMap>", "<BlockMap>&a;", "entity"),
            (
                "<bmap version=\"2.0\">",
                "<bmap version=\"1.4\">",
                "not 2.x",
            ),
            ("</bmap>\n", "</bmap>\n<bmap/>", "content after </bmap>"),
            ("</bmap>\n", "", "ends before </bmap>"),
            (
                "<BlockMap>",
                "<Extra> 1 </Extra><BlockMap>",
                "unknown element <Extra>",
            ),
            (
                "<BlockMap>",
                "<ImageSize> 1 </ImageSize><BlockMap>",
                "a second <ImageSize>",
            ),
            ("chksum=\"", "chksum=\"zz", "is not a sha256"),
        ];
        for (from, to, want) in cases {
            assert!(base.contains(from), "{from}");
            let e = err(&resum(&base.replacen(from, to, 1)));
            assert!(e.contains(want), "{to}: {e}");
        }
        assert!(err("\u{1b}[2J").contains("not a <bmap>"));
        let big = vec![b' '; MAX_BMAP_BYTES as usize + 1];
        assert!(format!("{:#}", parse(&big, "t").unwrap_err()).contains("larger than"));
    }
}
