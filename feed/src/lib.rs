//! tickwire-feed: see README.md. Filled in by its own issue.
