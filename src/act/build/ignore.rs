//! `.dockerignore`, which the docker CLI applies to a build context before
//! sending it (the engine does not): one pattern a line, `#` comments,
//! `!` re-includes, `*` and `?` within a path segment, `**` across
//! segments, a leading `/` or `./` dropped. The last pattern matching a
//! path or one of its parent directories decides.

/// The parsed patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    negate: bool,
    segments: Vec<String>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (negate, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let segments: Vec<String> = pattern
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect();
                (!segments.is_empty()).then_some(Rule { negate, segments })
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for rule in &self.rules {
            if (1..=parts.len()).any(|n| matches(&rule.segments, &parts[..n])) {
                excluded = !rule.negate;
            }
        }
        excluded
    }

    /// Whether some pattern re-includes paths, so an excluded directory
    /// must still be looked into.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.negate)
    }
}

fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => (0..=path.len()).any(|i| matches(rest, &path[i..])),
        Some((first, rest)) => {
            !path.is_empty()
                && segment(first.as_bytes(), path[0].as_bytes())
                && matches(rest, &path[1..])
        }
    }
}

/// `*` (any run) and `?` (one character) within one segment.
fn segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && segment(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_docker_cli() {
        let ig = Ignore::parse(
            "# build output\n\
             node_modules\n\
             /dist/\n\
             *.md\n\
             !README.md\n\
             **/__pycache__\n\
             docs\n\
             !docs/keep.txt\n\
             ./tmp?\n",
        );
        for out in [
            "node_modules",
            "node_modules/x/y.js",
            "dist/app.js",
            "CHANGES.md",
            "a/b/__pycache__/m.pyc",
            "__pycache__",
            "docs/other.txt",
            "tmp1",
        ] {
            assert!(ig.excluded(out), "{out} should be left out");
        }
        for kept in [
            "README.md",
            "src/main.py",
            "src/notes.md",
            "docs/keep.txt",
            "tmp",
            "distro/x",
        ] {
            assert!(!ig.excluded(kept), "{kept} should be kept");
        }
        assert!(ig.has_exceptions());
        assert_eq!(Ignore::parse("\n# only comments\n"), Ignore::default());
    }
}
