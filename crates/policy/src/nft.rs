//! A small reader for nftables ruleset files, enough for the audit.
//!
//! The audit runs on the build host against the image file and cannot load
//! the ruleset into the device's kernel, so it reads `/etc/nftables.conf`
//! as text: tables, base chains with their hook and policy, and each rule's
//! words with `$variables` expanded. The firewall check then asks questions
//! of that structure (is the input policy drop, which ports are accepted).
//!
//! It is deliberately conservative: anything it does not understand that
//! could accept traffic (jumps, verdict maps, includes, unknown accept
//! rules) is reported rather than guessed, so a hand-written ruleset fails
//! the audit loudly instead of passing it by accident. The tests load the
//! generated ruleset into a real kernel with `nft` to check the syntax side.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// A parsed ruleset file.
#[derive(Debug, Default)]
pub struct Ruleset {
    /// Tables in file order.
    pub tables: Vec<Table>,
    /// `include` statements (the audit does not follow them).
    pub includes: Vec<String>,
    /// Whether the file starts from `flush ruleset`.
    pub flushes: bool,
}

/// One table.
#[derive(Debug)]
pub struct Table {
    /// `inet`, `ip`, `ip6`, ...
    pub family: String,
    /// The table name.
    pub name: String,
    /// Chains in file order.
    pub chains: Vec<Chain>,
}

/// One chain.
#[derive(Debug, Default)]
pub struct Chain {
    /// The chain name.
    pub name: String,
    /// The hook for a base chain (`input`, `forward`, `output`).
    pub hook: Option<String>,
    /// The base chain policy (`accept` when a base chain gives none).
    pub policy: Option<String>,
    /// Each rule as words (`{`, `}` and `,` of sets are words too), with
    /// variables expanded and quotes removed.
    pub rules: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    LBrace,
    RBrace,
    Comma,
    End,
}

fn tokenize(text: &str) -> Result<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, toks: &mut Vec<Tok>| {
        if !word.is_empty() {
            toks.push(Tok::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                flush(&mut word, &mut toks);
                for c in chars.by_ref() {
                    if c == '\n' {
                        toks.push(Tok::End);
                        break;
                    }
                }
            }
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    s.push(c);
                }
                if !closed {
                    bail!("unterminated string");
                }
                word.push_str(&s);
            }
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            '\n' | ';' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::End);
            }
            '{' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::LBrace);
            }
            '}' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::RBrace);
            }
            ',' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Comma);
            }
            c if c.is_whitespace() => flush(&mut word, &mut toks),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut toks);
    toks.push(Tok::End);
    Ok(toks)
}

struct P {
    toks: Vec<Tok>,
    pos: usize,
    defines: BTreeMap<String, Vec<String>>,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn word(&mut self, what: &str) -> Result<String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => bail!("expected {what}"),
        }
    }

    /// Words of one statement, up to the end of line or `;` outside sets;
    /// stops before a `}` that closes the enclosing block.
    fn statement(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut depth = 0usize;
        while let Some(t) = self.peek().cloned() {
            match t {
                Tok::End if depth == 0 => break,
                Tok::End => {}
                Tok::RBrace if depth == 0 => break,
                Tok::RBrace => {
                    depth -= 1;
                    out.push("}".into());
                }
                Tok::LBrace => {
                    depth += 1;
                    out.push("{".into());
                }
                Tok::Comma => out.push(",".into()),
                Tok::Word(w) => out.extend(self.expand(&w)?),
            }
            self.pos += 1;
        }
        Ok(out)
    }

    fn expand(&self, w: &str) -> Result<Vec<String>> {
        match w.strip_prefix('$') {
            Some(name) => match self.defines.get(name) {
                Some(v) => Ok(v.clone()),
                None => bail!("undefined variable ${name}"),
            },
            None => Ok(vec![w.to_string()]),
        }
    }

    fn skip_block(&mut self) -> Result<()> {
        let mut depth = 0usize;
        while let Some(t) = self.next() {
            match t {
                Tok::LBrace => depth += 1,
                Tok::RBrace => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        bail!("unbalanced braces")
    }

    fn expect_lbrace(&mut self) -> Result<()> {
        while let Some(Tok::End) = self.peek() {
            self.pos += 1;
        }
        match self.next() {
            Some(Tok::LBrace) => Ok(()),
            _ => bail!("expected '{{'"),
        }
    }
}

/// Parses a ruleset file.
pub fn parse(text: &str) -> Result<Ruleset> {
    let mut p = P {
        toks: tokenize(text)?,
        pos: 0,
        defines: BTreeMap::new(),
    };
    let mut rs = Ruleset::default();
    while let Some(t) = p.next() {
        match t {
            Tok::End => {}
            Tok::Word(w) => match w.as_str() {
                "flush" => {
                    let rest = p.statement()?;
                    if rest.first().map(String::as_str) == Some("ruleset") {
                        rs.flushes = true;
                    }
                }
                "define" | "redefine" => {
                    let name = p.word("a variable name")?;
                    if p.word("'='")? != "=" {
                        bail!("expected '=' after define {name}");
                    }
                    let value = p.statement()?;
                    p.defines.insert(name, value);
                }
                "include" => {
                    let rest = p.statement()?;
                    rs.includes.push(rest.join(" "));
                }
                "table" => rs.tables.push(table(&mut p)?),
                other => bail!("unsupported top-level statement '{other}'"),
            },
            _ => bail!("unexpected brace or comma at top level"),
        }
    }
    Ok(rs)
}

fn table(p: &mut P) -> Result<Table> {
    let a = p.word("a table name")?;
    let (family, name) = match p.peek() {
        Some(Tok::Word(_)) => (a, p.word("a table name")?),
        _ => ("ip".to_string(), a),
    };
    p.expect_lbrace()?;
    let mut t = Table {
        family,
        name,
        chains: Vec::new(),
    };
    loop {
        match p.next() {
            None => bail!("table {} is not closed", t.name),
            Some(Tok::End) => {}
            Some(Tok::RBrace) => return Ok(t),
            Some(Tok::Word(w)) if w == "chain" => t.chains.push(chain(p)?),
            Some(Tok::Word(w))
                if [
                    "set",
                    "map",
                    "flowtable",
                    "counter",
                    "quota",
                    "limit",
                    "ct",
                    "secmark",
                    "synproxy",
                ]
                .contains(&w.as_str()) =>
            {
                let _name = p.word("a name")?;
                p.expect_lbrace()?;
                p.pos -= 1;
                p.skip_block()?;
            }
            Some(Tok::Word(w)) if w == "flags" || w == "comment" => {
                p.statement()?;
            }
            Some(other) => bail!("unexpected {other:?} in table {}", t.name),
        }
    }
}

fn chain(p: &mut P) -> Result<Chain> {
    let name = p.word("a chain name")?;
    p.expect_lbrace()?;
    let mut c = Chain {
        name,
        ..Chain::default()
    };
    loop {
        match p.peek() {
            None => bail!("chain {} is not closed", c.name),
            Some(Tok::End) => {
                p.pos += 1;
            }
            Some(Tok::RBrace) => {
                p.pos += 1;
                if c.hook.is_some() && c.policy.is_none() {
                    // A base chain without a policy accepts.
                    c.policy = Some("accept".into());
                }
                return Ok(c);
            }
            _ => {
                let st = p.statement()?;
                match st.first().map(String::as_str) {
                    Some("type") => {
                        if let Some(i) = st.iter().position(|w| w == "hook") {
                            c.hook = st.get(i + 1).cloned();
                        }
                    }
                    Some("policy") => c.policy = st.get(1).cloned(),
                    Some("comment") | None => {}
                    Some(_) => c.rules.push(st),
                }
            }
        }
    }
}

/// Ports named by service in nftables (from /etc/services) that rulesets
/// commonly use.
fn service_port(name: &str) -> Option<u16> {
    Some(match name {
        "ssh" => 22,
        "domain" => 53,
        "bootps" => 67,
        "bootpc" => 68,
        "http" => 80,
        "ntp" => 123,
        "snmp" => 161,
        "https" => 443,
        "syslog" => 514,
        "mqtt" => 1883,
        _ => return None,
    })
}

/// How the audit classifies one rule of a chain.
#[derive(Debug, PartialEq, Eq)]
pub enum RuleClass {
    /// `ct state established,related accept` (possibly with other states
    /// among established/related only).
    Established,
    /// Accepts loopback by interface.
    Loopback,
    /// Accepts ICMP or ICMPv6 messages.
    Icmp,
    /// Accepts new connections to ports; `restricted` when the rule also
    /// matches peer addresses.
    Ports {
        /// `tcp` or `udp`.
        proto: String,
        /// The ports.
        ports: Vec<u16>,
        /// Whether the rule matches peer addresses.
        restricted: bool,
    },
    /// Does not accept anything (drop, log, counter).
    NoAccept,
    /// Accepts or diverts traffic in a way the audit does not interpret.
    Unknown,
}

/// Classifies a rule's words.
pub fn classify(words: &[String]) -> RuleClass {
    let has = |w: &str| words.iter().any(|x| x == w);
    if ["jump", "goto", "vmap", "queue", "continue", "return"]
        .iter()
        .any(|w| has(w))
    {
        return RuleClass::Unknown;
    }
    if !has("accept") {
        return RuleClass::NoAccept;
    }
    // Exactly `ct state <established/related...> [counter] accept`: any
    // other match in the rule would make it something else.
    if words.len() > 3
        && words[0] == "ct"
        && words[1] == "state"
        && words.last().is_some_and(|w| w == "accept")
    {
        let states: Vec<&str> = words[2..words.len() - 1]
            .iter()
            .map(String::as_str)
            .filter(|w| !matches!(*w, "{" | "}" | "," | "counter"))
            .collect();
        if !states.is_empty()
            && states
                .iter()
                .all(|s| *s == "established" || *s == "related")
        {
            return RuleClass::Established;
        }
    }
    if words.len() == 3 && (words[0] == "iif" || words[0] == "iifname") && words[1] == "lo" {
        return RuleClass::Loopback;
    }
    if words.len() == 3 && (words[0] == "oif" || words[0] == "oifname") && words[1] == "lo" {
        return RuleClass::Loopback;
    }
    if let Some(i) = words.iter().position(|w| w == "dport") {
        let proto = match i
            .checked_sub(1)
            .and_then(|j| words.get(j))
            .map(String::as_str)
        {
            Some(p @ ("tcp" | "udp")) => p.to_string(),
            _ => return RuleClass::Unknown,
        };
        let mut ports = Vec::new();
        let rest = &words[i + 1..];
        let vals: Vec<&String> = if rest.first().map(String::as_str) == Some("{") {
            rest[1..]
                .iter()
                .take_while(|w| *w != "}")
                .filter(|w| *w != ",")
                .collect()
        } else {
            rest.iter().take(1).collect()
        };
        for v in vals {
            match v.parse::<u16>().ok().or_else(|| service_port(v)) {
                Some(p) => ports.push(p),
                None => return RuleClass::Unknown,
            }
        }
        // Other matches that could widen the rule are not expected.
        if ports.is_empty() || words.iter().filter(|w| *w == "dport").count() > 1 {
            return RuleClass::Unknown;
        }
        let restricted = has("saddr") || has("daddr");
        return RuleClass::Ports {
            proto,
            ports,
            restricted,
        };
    }
    if has("icmp") || has("icmpv6") {
        if has("type") {
            return RuleClass::Icmp;
        }
        return RuleClass::Unknown;
    }
    RuleClass::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        let rs = parse(&format!("table inet t {{ chain c {{ {s} }} }}")).unwrap();
        rs.tables[0].chains[0].rules[0].clone()
    }

    #[test]
    fn classifies_rules() {
        assert_eq!(
            classify(&w("ct state { established, related } accept")),
            RuleClass::Established
        );
        assert_eq!(
            classify(&w("ct state established,related accept")),
            RuleClass::Established
        );
        assert_eq!(classify(&w("ct state new accept")), RuleClass::Unknown);
        assert_eq!(classify(&w("iif \"lo\" accept")), RuleClass::Loopback);
        assert_eq!(classify(&w("iif eth0 accept")), RuleClass::Unknown);
        assert_eq!(
            classify(&w(
                "ip saddr { 10.0.0.0/8 } tcp dport { 22, https } ct state new accept"
            )),
            RuleClass::Ports {
                proto: "tcp".into(),
                ports: vec![22, 443],
                restricted: true
            }
        );
        assert_eq!(classify(&w("tcp dport 22 jump x")), RuleClass::Unknown);
        assert_eq!(classify(&w("counter drop")), RuleClass::NoAccept);
        assert_eq!(classify(&w("accept")), RuleClass::Unknown);
        assert_eq!(
            classify(&w("icmp type echo-request limit rate 5/second accept")),
            RuleClass::Icmp
        );
    }

    #[test]
    fn parses_defines_and_policies() {
        let rs = parse(
            "#!/usr/sbin/nft -f\nflush ruleset\ndefine P = { 22, 443 }\n\
             table inet filter {\n chain input {\n  type filter hook input priority filter; policy drop;\n\
             tcp dport $P accept\n }\n chain forward { type filter hook forward priority 0; }\n}\n",
        )
        .unwrap();
        assert!(rs.flushes);
        let t = &rs.tables[0];
        assert_eq!(t.family, "inet");
        assert_eq!(t.chains[0].policy.as_deref(), Some("drop"));
        assert_eq!(t.chains[1].policy.as_deref(), Some("accept"));
        assert_eq!(
            classify(&t.chains[0].rules[0]),
            RuleClass::Ports {
                proto: "tcp".into(),
                ports: vec![22, 443],
                restricted: false
            }
        );
        assert!(parse("table inet x { chain c { tcp dport $NOPE accept } }").is_err());
    }
}
