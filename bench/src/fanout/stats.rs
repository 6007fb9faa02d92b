//! The counters a fanout client keeps and reports to the coordinator, and their stdout line:
//! `STATS <updates> <msgs> <gaps> <missing> <snapshots> <errors> <dead> <opened>`. The client
//! writes it ([`Counts::to_line`]), the coordinator reads it ([`Counts::parse_line`]) and sums
//! the clients ([`Counts::add`]); the field list and its order are written once, below.

/// First word of the line.
pub const PREFIX: &str = "STATS";

macro_rules! counts {
    ($($(#[$doc:meta])* $f:ident,)*) => {
        /// What one client counted since its last `RESET` (or, summed, what all clients did).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counts {
            $($(#[$doc])* pub $f: u64,)*
        }

        impl Counts {
            /// The `STATS …` line (no newline).
            pub fn to_line(self) -> String {
                let mut l = String::from(PREFIX);
                $(l.push_str(&format!(" {}", self.$f));)*
                l
            }

            /// Reads a line written by [`Counts::to_line`]: the prefix, then exactly one unsigned
            /// integer per field.
            pub fn parse_line(line: &str) -> Result<Counts, String> {
                let bad = || format!("bad stats line {line:?}");
                let mut w = line.split_whitespace();
                if w.next() != Some(PREFIX) {
                    return Err(bad());
                }
                let mut next = || w.next().and_then(|x| x.parse::<u64>().ok()).ok_or_else(bad);
                let c = Counts { $($f: next()?,)* };
                match w.next() {
                    None => Ok(c),
                    Some(_) => Err(bad()),
                }
            }

            /// Adds `o` field by field.
            pub fn add(&mut self, o: &Counts) {
                $(self.$f += o.$f;)*
            }
        }
    };
}

counts! {
    /// Sequence numbers covered by the DeltaBatch, Trade and Status messages received.
    updates,
    /// Those messages.
    msgs,
    /// Messages that did not start at the next expected sequence of their instrument.
    gaps,
    /// Sequence numbers skipped by those gaps.
    missing,
    /// Snapshots received (each subscription's first, and resyncs).
    snapshots,
    /// Undecodable messages and server `Error`s.
    errors,
    /// Connections dead at report time (filled in when the line is written).
    dead,
    /// Connections upgraded since the start (filled in when the line is written).
    opened,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips() {
        let c = Counts { updates: 1, msgs: 2, gaps: 3, missing: 4, snapshots: 5, errors: 6, dead: 7, opened: u64::MAX };
        let l = c.to_line();
        assert_eq!(l, format!("STATS 1 2 3 4 5 6 7 {}", u64::MAX));
        assert_eq!(Counts::parse_line(&l), Ok(c));
        assert_eq!(Counts::parse_line(&Counts::default().to_line()), Ok(Counts::default()));
    }

    #[test]
    fn a_malformed_line_is_refused() {
        for l in ["", "STATS", "STATS 1 2 3 4 5 6 7", "STATS 1 2 3 4 5 6 7 8 9", "STATS 1 2 3 4 5 6 7 x", "HIST 1 2 3 4 5 6 7 8"] {
            assert!(Counts::parse_line(l).is_err(), "{l:?}");
        }
    }

    #[test]
    fn add_sums_every_field() {
        let a = Counts { updates: 1, msgs: 2, gaps: 3, missing: 4, snapshots: 5, errors: 6, dead: 7, opened: 8 };
        let mut s = a;
        s.add(&a);
        assert_eq!(s.to_line(), "STATS 2 4 6 8 10 12 14 16");
    }
}
