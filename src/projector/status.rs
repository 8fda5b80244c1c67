//! The status of an interaction.

use crate::event::Action;

/// The status of an interaction, derived by the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A start event arrived and nothing after it yet.
    Started,
    /// Progress arrived and no terminal event yet.
    InProgress,
    /// The first terminal event was `interaction_complete`.
    Completed,
    /// The first terminal event was `interaction_error`.
    Failed,
    /// The first terminal event was `interaction_cancelled`.
    Cancelled,
}

impl Status {
    /// Number of statuses.
    pub const COUNT: usize = 5;
    /// Every status, in index order.
    pub const ALL: [Status; Status::COUNT] = [
        Status::Started,
        Status::InProgress,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// Position in [`Status::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The status with this API name.
    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The name used in the API (the reference's names, plus `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Whether the interaction is still running.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Started | Status::InProgress)
    }

    pub(super) fn terminal(action: Action) -> Option<Status> {
        match action {
            Action::Complete => Some(Status::Completed),
            Action::Error => Some(Status::Failed),
            Action::Cancelled => Some(Status::Cancelled),
            Action::Start | Action::Progress => None,
        }
    }
}
