//! Which mcp_ids a read covers: the one decision every read endpoint makes from the caller's
//! key and the `mcp_id` it asked for.

/// The mcp_ids a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every mcp_id (an auditor's or admin's read with no `mcp_id` asked).
    All,
    /// This one mcp_id.
    Only(&'a str),
    /// None: a writer asked for another mcp_id than its own, which reads exactly as an unknown
    /// mcp_id does (empty), so a writer learns nothing of the others.
    Nothing,
}

impl<'a> Scope<'a> {
    /// This scope narrowed by the `mcp_id` a request asked for.
    pub fn narrow(self, asked: Option<&'a str>) -> Scope<'a> {
        match (self, asked) {
            (scope, None) => scope,
            (Scope::All, Some(mcp_id)) => Scope::Only(mcp_id),
            (Scope::Only(own), Some(mcp_id)) if own == mcp_id => Scope::Only(own),
            (Scope::Only(_) | Scope::Nothing, Some(_)) => Scope::Nothing,
        }
    }

    /// Whether records of `mcp_id` are in scope.
    pub fn admits(self, mcp_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(own) => own == mcp_id,
            Scope::Nothing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn narrowing_never_widens() {
        assert_eq!(Scope::All.narrow(None), Scope::All);
        assert_eq!(Scope::All.narrow(Some("m")), Scope::Only("m"));
        assert_eq!(Scope::Only("m").narrow(Some("m")), Scope::Only("m"));
        assert_eq!(Scope::Only("m").narrow(Some("n")), Scope::Nothing);
        assert_eq!(Scope::Only("m").narrow(None), Scope::Only("m"));
        assert_eq!(Scope::Nothing.narrow(Some("m")), Scope::Nothing);
        assert!(Scope::All.admits("x") && Scope::Only("x").admits("x"));
        assert!(!Scope::Only("x").admits("y") && !Scope::Nothing.admits("x"));
    }
}
