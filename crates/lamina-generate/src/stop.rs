//! Stop strings: text is released only when it cannot be the start of a stop string, and
//! generation ends at the first complete one (which is not part of the output).

/// Holds back text that might begin a stop string.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

/// What [`StopStrings::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCheck {
    /// Text that is safe to release.
    Continue(String),
    /// A stop string was completed: the text before it, and the stop string.
    Stop(String, String),
}

impl StopStrings {
    /// Watches for any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds decoded text.
    pub fn push(&mut self, text: &str) -> StopCheck {
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first {
            let before = self.pending[..at].to_owned();
            let stop = stop.clone();
            self.pending.clear();
            return StopCheck::Stop(before, stop);
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|prefix| self.pending.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let release = self.pending.len() - hold;
        let out = self.pending[..release].to_owned();
        self.pending.drain(..release);
        StopCheck::Continue(out)
    }

    /// Releases what is held back (generation ended for another reason).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_possible_stop_prefixes_and_stops_at_the_first_match() {
        let mut stops = StopStrings::new(&["</answer>".into(), "\n\n".into()]);
        assert_eq!(stops.push("Paris</"), StopCheck::Continue("Paris".into()));
        assert_eq!(stops.push("ans"), StopCheck::Continue(String::new()));
        assert_eq!(stops.push("wer> tail"), StopCheck::Stop(String::new(), "</answer>".into()));
        let mut stops = StopStrings::new(&["\n\n".into()]);
        assert_eq!(stops.push("a\n"), StopCheck::Continue("a".into()));
        assert_eq!(stops.push("b"), StopCheck::Continue("\nb".into()));
        assert_eq!(stops.push("c\n\nd"), StopCheck::Stop("c".into(), "\n\n".into()));
        let mut none = StopStrings::new(&[]);
        assert_eq!(none.push("x"), StopCheck::Continue("x".into()));
        let mut held = StopStrings::new(&["END".into()]);
        assert_eq!(held.push("the E"), StopCheck::Continue("the ".into()));
        assert_eq!(held.flush(), "E");
    }
}
