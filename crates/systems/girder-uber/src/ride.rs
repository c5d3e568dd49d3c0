//! The ride's state machine, pure: which transitions exist and who may make them.
//! The store applies a transition only from the state it was checked against (a
//! conditional update), so two concurrent transitions of one ride never both win.
//!
//! ```text
//! requested ──accept──▶ matched ──depart──▶ en_route ──pickup──▶ in_progress ──complete──▶ completed
//!     │                   │                    │
//!     └──────cancel───────┴───────cancel───────┴──▶ cancelled
//! ```
//!
//! A driver who cancels a matched or en-route ride hands it back: it returns to
//! `requested` and is offered to someone else, never to that driver again. A ride
//! nobody accepts before its matching deadline is cancelled with the reason
//! `no_driver`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a ride is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RideState {
    /// Waiting for a driver to accept an offer.
    Requested,
    /// A driver accepted; not yet on the way.
    Matched,
    /// The driver is on the way to the pickup.
    EnRoute,
    /// The rider is in the car.
    InProgress,
    /// Dropped off.
    Completed,
    /// Ended without a trip.
    Cancelled,
}

impl RideState {
    /// The name stored in the table.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Matched => "matched",
            Self::EnRoute => "en_route",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state of a stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requested" => Self::Requested,
            "matched" => Self::Matched,
            "en_route" => Self::EnRoute,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the ride is over.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// Whether a driver holds the ride.
    #[must_use]
    pub const fn has_driver(self) -> bool {
        matches!(self, Self::Matched | Self::EnRoute | Self::InProgress)
    }
}

/// A transition asked for through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RideAction {
    /// The driver sets off to the pickup (matched → en route).
    Depart,
    /// The rider is aboard (en route → in progress).
    Pickup,
    /// The rider is dropped off (in progress → completed).
    Complete,
    /// The rider ends the ride before pickup, or the driver hands it back.
    Cancel,
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The ride's rider.
    Rider,
    /// The ride's driver.
    Driver,
}

/// What a permitted action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The ride moves to this state.
    To(RideState),
    /// The driver hands the ride back: it returns to `requested` without them.
    HandBack,
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The action does not apply to the ride's state.
    #[error("cannot {action:?} a ride that is {}", from.as_str())]
    WrongState {
        /// The ride's state.
        from: RideState,
        /// The action asked for.
        action: RideAction,
    },
    /// This party may not take this action.
    #[error("the {party:?} may not {action:?} this ride")]
    NotAllowed {
        /// Who asked.
        party: Party,
        /// The action asked for.
        action: RideAction,
    },
}

/// Decides what `action` by `party` does to a ride in state `from`.
///
/// # Errors
/// [`TransitionError`] when the action does not apply or is not theirs.
pub fn decide(from: RideState, party: Party, action: RideAction) -> Result<Step, TransitionError> {
    use RideAction as A;
    use RideState as S;
    let wrong = Err(TransitionError::WrongState { from, action });
    let not_theirs = Err(TransitionError::NotAllowed { party, action });
    match (action, party) {
        (A::Depart | A::Pickup | A::Complete, Party::Rider) => not_theirs,
        (A::Depart, Party::Driver) => {
            if from == S::Matched {
                Ok(Step::To(S::EnRoute))
            } else {
                wrong
            }
        }
        (A::Pickup, Party::Driver) => {
            if from == S::EnRoute {
                Ok(Step::To(S::InProgress))
            } else {
                wrong
            }
        }
        (A::Complete, Party::Driver) => {
            if from == S::InProgress {
                Ok(Step::To(S::Completed))
            } else {
                wrong
            }
        }
        (A::Cancel, Party::Rider) => match from {
            S::Requested | S::Matched | S::EnRoute => Ok(Step::To(S::Cancelled)),
            _ => wrong,
        },
        (A::Cancel, Party::Driver) => match from {
            S::Matched | S::EnRoute => Ok(Step::HandBack),
            _ => wrong,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RideAction as A;
    use RideState as S;

    const ALL: [RideState; 6] =
        [S::Requested, S::Matched, S::EnRoute, S::InProgress, S::Completed, S::Cancelled];

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(RideState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RideState::parse("flying"), None);
    }

    #[test]
    fn every_transition() {
        let allowed = [
            (S::Matched, Party::Driver, A::Depart, Step::To(S::EnRoute)),
            (S::EnRoute, Party::Driver, A::Pickup, Step::To(S::InProgress)),
            (S::InProgress, Party::Driver, A::Complete, Step::To(S::Completed)),
            (S::Requested, Party::Rider, A::Cancel, Step::To(S::Cancelled)),
            (S::Matched, Party::Rider, A::Cancel, Step::To(S::Cancelled)),
            (S::EnRoute, Party::Rider, A::Cancel, Step::To(S::Cancelled)),
            (S::Matched, Party::Driver, A::Cancel, Step::HandBack),
            (S::EnRoute, Party::Driver, A::Cancel, Step::HandBack),
        ];
        for from in ALL {
            for party in [Party::Rider, Party::Driver] {
                for action in [A::Depart, A::Pickup, A::Complete, A::Cancel] {
                    let want = allowed
                        .iter()
                        .find(|(f, p, a, _)| (*f, *p, *a) == (from, party, action))
                        .map(|(_, _, _, step)| *step);
                    let got = decide(from, party, action);
                    assert_eq!(got.ok(), want, "{from:?} {party:?} {action:?}");
                }
            }
        }
        // Final states accept nothing.
        for s in [S::Completed, S::Cancelled] {
            assert!(s.is_final() && !s.has_driver());
        }
    }
}
