//! Confirmation of a change that touches workspaces: `--yes`, or a `y` typed
//! at a terminal. Without a terminal and without `--yes` nothing changes.

use std::io::{BufRead, Write};

use super::OpsError;

/// How the command may be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// `--yes`: no question asked.
    Yes,
    /// Ask at the terminal (stdin is one).
    Ask,
    /// Neither: refuse.
    Refuse,
}

impl Confirm {
    pub fn new(yes: bool, stdin_is_terminal: bool) -> Self {
        match (yes, stdin_is_terminal) {
            (true, _) => Confirm::Yes,
            (false, true) => Confirm::Ask,
            (false, false) => Confirm::Refuse,
        }
    }
}

/// Whether to go ahead: `Ok(false)` when the operator declined, a usage
/// error when there is no terminal to ask and no `--yes`.
pub fn confirm(
    mode: Confirm,
    question: &str,
    input: &mut dyn BufRead,
    prompt: &mut dyn Write,
) -> Result<bool, OpsError> {
    match mode {
        Confirm::Yes => Ok(true),
        Confirm::Refuse => Err(OpsError::Usage(
            "refusing to change a pin without confirmation: stdin is not a terminal; \
             pass --yes to confirm"
                .into(),
        )),
        Confirm::Ask => {
            let _ = write!(prompt, "{question} [y/N] ");
            let _ = prompt.flush();
            let mut answer = String::new();
            input
                .read_line(&mut answer)
                .map_err(|e| OpsError::Failed(format!("reading the answer: {e}")))?;
            Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_skips_the_question_and_no_terminal_refuses() {
        let mut out = Vec::new();
        let mut none: &[u8] = b"";
        assert!(confirm(Confirm::new(true, false), "go?", &mut none, &mut out).unwrap());
        let refused = confirm(Confirm::new(false, false), "go?", &mut none, &mut out);
        assert!(matches!(refused, Err(OpsError::Usage(m)) if m.contains("--yes")));
        assert!(out.is_empty());
    }

    #[test]
    fn only_a_yes_at_the_terminal_goes_ahead() {
        for (typed, go) in [
            ("y\n", true),
            ("yes\n", true),
            ("n\n", false),
            ("\n", false),
        ] {
            let mut out = Vec::new();
            let mut input = typed.as_bytes();
            let answer = confirm(Confirm::Ask, "go?", &mut input, &mut out).unwrap();
            assert_eq!(answer, go, "{typed:?}");
            assert_eq!(String::from_utf8(out).unwrap(), "go? [y/N] ");
        }
    }
}
