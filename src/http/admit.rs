//! Admission: the one path by which events of every ingest route (a single event, a batch, a
//! partial batch, an OTLP export) reach the engine. The steps, in this order:
//!
//! 1. authenticate: the `Principal` extractor, from the request's one `Authorization` header;
//! 2. the key may write at all (an auditor's is refused before anything is read);
//! 3. rate limit: one token before the body is read, so a key over its rate costs one bucket check;
//! 4. read the body within the route's limit (and time), then check the key again: it may have
//!    been revoked, or expired, while the body arrived;
//! 5. the route splits the body into items (events, or an export's spans mapped to events) and
//!    the request is charged its full cost, one token per event, before any event is validated;
//! 6. each item: its size (`event_bytes_max`), validation (with the clock), scope to the key's
//!    mcp_id, redaction; then the interaction cap (`interaction_events_max`) over all of them;
//! 7. the checked events go to the engine, all or nothing, or partially (each one answered).
//!
//! Nothing here shapes JSON: outcomes are values ([`Outcome`]), answered by the routes.

use axum::body::Body;
use axum::http::HeaderMap;
use hyper::body::Bytes;

use super::body::{read_body, BodyLimit};
use super::{ApiError, AppState, ItemError};
use crate::auth::{Principal, Role};
use crate::engine::{Ack, Holder, SubmitError};
use crate::event::{self, NewEvent};
use crate::refusal::Code;

/// One item after step 6: its index in the request and the event to store, or its refusal.
pub(super) type Checked = Result<(usize, NewEvent), ItemError>;

/// What became of one event of a partial submission.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Appended now, as this seq.
    Stored(u64),
    /// Its `event_id` was already stored with this body, as this seq; nothing was appended.
    Duplicate(u64),
    /// Not stored, and why.
    Refused(ItemError),
}

/// A partial submission's answer: each item's outcome with its index, in request order.
pub(super) struct Partial {
    pub outcomes: Vec<(usize, Outcome)>,
    /// Events queued ahead of the submission's, its own included (0 if none was submitted).
    pub queue_position: usize,
}

/// An all-or-nothing submission's answer: each event's ack, in request order.
pub(super) struct Stored {
    pub acks: Vec<Ack>,
    pub queue_position: usize,
}

/// A request being admitted: who sends it, and the tokens it has been charged.
pub(super) struct Admission<'s> {
    state: &'s AppState,
    principal: &'s Principal,
    charged: u32,
}

impl<'s> Admission<'s> {
    /// Steps 2 to 4: returns the admission and the body.
    pub async fn begin(
        state: &'s AppState,
        principal: &'s Principal,
        headers: &HeaderMap,
        body: Body,
        limit: BodyLimit,
    ) -> Result<(Admission<'s>, Bytes), ApiError> {
        if principal.role == Role::Auditor {
            return Err(ApiError::forbidden(AUDITOR_MAY_NOT_WRITE, "authorization"));
        }
        let mut admission = Admission {
            state,
            principal,
            charged: 0,
        };
        admission.charge(1)?;
        let bytes = read_body(headers, body, limit, state.limits.body_read_timeout).await?;
        super::still_accepted(state, principal)?;
        Ok((admission, bytes))
    }

    /// Most events one submission to the engine may hold.
    pub fn batch_events_max(&self) -> usize {
        self.state.limits.batch_events_max
    }

    /// Step 5: charges the request `events` tokens in all (those already taken count), or
    /// refuses it, taking none more.
    pub fn charge(&mut self, events: usize) -> Result<(), ApiError> {
        let events = u32::try_from(events).unwrap_or(u32::MAX);
        if events > self.charged {
            self.state.rate_limits.check_more(
                self.principal,
                self.charged,
                events - self.charged,
            )?;
            self.charged = events;
        }
        Ok(())
    }

    /// Step 6, for every item (its index in the request and its text).
    pub fn check<'t>(&self, items: impl IntoIterator<Item = (usize, &'t str)>) -> Vec<Checked> {
        let mut checked: Vec<Checked> = items
            .into_iter()
            .map(|(index, text)| {
                self.check_item(text)
                    .map(|new| (index, new))
                    .map_err(|err| ItemError::of(index, err))
            })
            .collect();
        self.refuse_past_events_max(&mut checked);
        checked
    }

    fn check_item(&self, text: &str) -> Result<NewEvent, ApiError> {
        let limits = &self.state.limits;
        if text.len() > limits.event_bytes_max {
            let message = format!(
                "the event is {} bytes; event_bytes_max is {}",
                text.len(),
                limits.event_bytes_max
            );
            return Err(ApiError::new(Code::EventTooLarge, message).with_field("body"));
        }
        let valid = event::validate(text)?;
        let now_s = crate::clock::now_us() as f64 / 1e6;
        event::check_clock(valid.timestamp, now_s, limits.clock_skew_max.as_secs_f64())?;
        if !self.principal.may_write(&valid.mcp_id) {
            let message = format!(
                "this key may write events of mcp_id {:?} only, not {:?}",
                self.principal.mcp_id.as_deref().unwrap_or_default(),
                valid.mcp_id
            );
            return Err(ApiError::forbidden(message, "mcp_id"));
        }
        Ok(self.state.redactor.new_event(&valid)?)
    }

    /// Refuses (409 `interaction_full`) each event that would take its interaction past
    /// `interaction_events_max`, counting what is stored and the request's earlier events. An
    /// event whose `event_id` is stored already is left to planning (a duplicate is answered as
    /// one, never refused as full). Checked against the view when the request is checked:
    /// requests for one interaction in flight at once may together pass the cap by their own
    /// events, at most.
    fn refuse_past_events_max(&self, checked: &mut [Checked]) {
        let max = self.state.limits.interaction_events_max as u64;
        let view = self.state.engine.view();
        let mut added: std::collections::HashMap<(String, String), u64> = Default::default();
        // An event_id met earlier in the request: planning answers its repeat as a duplicate
        // (or a conflict), never as an event more.
        let mut ids: std::collections::HashSet<(String, String)> = Default::default();
        for item in checked.iter_mut() {
            let Ok((index, new)) = item else { continue };
            let (mcp_id, interaction_id) = (new.mcp_id(), new.interaction_id());
            let known = new.event_id().is_some_and(|event_id| {
                view.projection.event_id_entry(mcp_id, event_id).is_some()
                    || !ids.insert((mcp_id.to_owned(), event_id.to_owned()))
            });
            if known {
                continue;
            }
            let stored = view
                .projection
                .get(mcp_id, interaction_id)
                .map_or(0, |record| u64::from(record.event_count()));
            let count = added
                .entry((mcp_id.to_owned(), interaction_id.to_owned()))
                .or_insert(0);
            if stored + *count < max {
                *count += 1;
                continue;
            }
            let message = format!(
                "interaction {interaction_id:?} holds {stored} events and this request adds {} \
                 before this one; interaction_events_max is {max}",
                *count
            );
            let refusal =
                ApiError::new(Code::InteractionFull, message).with_field("interaction_id");
            *item = Err(ItemError::of(*index, refusal));
        }
    }

    /// Step 7, all or nothing: any refused item refuses the request (422 `invalid_batch` listing
    /// the invalid ones, else 403 listing the forbidden ones, else 409 `interaction_full` listing
    /// those), and so does a conflict; nothing is stored then.
    pub async fn store_all(&self, checked: Vec<Checked>) -> Result<Stored, ApiError> {
        let count = checked.len();
        let mut events = Vec::with_capacity(count);
        let mut indexes = Vec::with_capacity(count);
        let mut refused = Vec::new();
        for item in checked {
            match item {
                Ok((index, new)) => {
                    indexes.push(index);
                    events.push(new);
                }
                Err(error) => refused.push(error),
            }
        }
        if let Some(refusal) = refusal_of_batch(count, refused) {
            return Err(refusal);
        }
        let (acks, queue_position) = self
            .state
            .engine
            .submit(events, self.principal.key_id)
            .await
            // A conflict names events by their place in the request (NDJSON's are lines).
            .map_err(|err| ApiError::from(renumber(err, |i| indexes[i])))?;
        Ok(Stored {
            acks,
            queue_position,
        })
    }

    /// Step 7, partially: the valid events are submitted as one group; an event whose
    /// `event_id` conflicts is refused and the rest submitted again. Each round drops at least
    /// one event, so there are at most as many rounds as events, and a conflict stores nothing,
    /// so what is stored is exactly what the outcomes say. A failure of the whole submission
    /// (queue full, storage, shutdown) fails the request: nothing of it is stored.
    pub async fn store_partially(&self, checked: Vec<Checked>) -> Result<Partial, ApiError> {
        let mut outcomes: Vec<(usize, Option<Outcome>)> = Vec::with_capacity(checked.len());
        // (position in `outcomes`, event) of every event still to submit.
        let mut pending = Vec::new();
        for (position, item) in checked.into_iter().enumerate() {
            match item {
                Ok((index, new)) => {
                    pending.push((position, new));
                    outcomes.push((index, None));
                }
                Err(error) => outcomes.push((error.index, Some(Outcome::Refused(error)))),
            }
        }
        let mut queue_position = 0;
        while !pending.is_empty() {
            let events = pending.iter().map(|(_, new)| new.clone()).collect();
            match self
                .state
                .engine
                .submit(events, self.principal.key_id)
                .await
            {
                Ok((acks, position)) => {
                    queue_position = position;
                    for ((position, _), ack) in pending.iter().zip(acks) {
                        outcomes[*position].1 = Some(if ack.duplicate {
                            Outcome::Duplicate(ack.seq)
                        } else {
                            Outcome::Stored(ack.seq)
                        });
                    }
                    break;
                }
                Err(SubmitError::Conflict(conflicts)) if !conflicts.is_empty() => {
                    for conflict in &conflicts {
                        let position = pending[conflict.index].0;
                        let index = outcomes[position].0;
                        let message = conflict.describe(|earlier| outcomes[pending[earlier].0].0);
                        let refusal =
                            ApiError::new(Code::Conflict, message).with_field(conflict.field);
                        outcomes[position].1 =
                            Some(Outcome::Refused(ItemError::of(index, refusal)));
                    }
                    let mut at = 0;
                    pending.retain(|_| {
                        at += 1;
                        !conflicts.iter().any(|c| c.index == at - 1)
                    });
                }
                Err(err) => return Err(err.into()),
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|(index, outcome)| {
                let outcome =
                    outcome.expect("every event is answered: refused, stored or conflicting");
                (index, outcome)
            })
            .collect();
        Ok(Partial {
            outcomes,
            queue_position,
        })
    }
}

const AUDITOR_MAY_NOT_WRITE: &str = "an auditor key may not write events";

/// The refusal of an all-or-nothing request of `count` items, some refused, by what a client
/// must do first: fix the invalid ones (whatever its key), else drop the forbidden ones, else the
/// ones past their interaction's cap. Each is answered with the status of its kind and lists the
/// events of that kind.
fn refusal_of_batch(count: usize, refused: Vec<ItemError>) -> Option<ApiError> {
    let kind = |error: &ItemError| match error.code {
        Code::Forbidden => 1,
        Code::InteractionFull => 2,
        _ => 0,
    };
    let first = refused.iter().map(kind).min()?;
    let errors: Vec<ItemError> = refused.into_iter().filter(|e| kind(e) == first).collect();
    let n = errors.len();
    let refusal = match first {
        0 => ApiError::new(
            Code::InvalidBatch,
            format!("{n} of {count} events are invalid; nothing was stored"),
        ),
        1 => ApiError::forbidden(
            format!("{n} of {count} events are for an mcp_id this key may not write; nothing was stored"),
            "mcp_id",
        ),
        _ => ApiError::new(
            Code::InteractionFull,
            format!("{n} of {count} events would take their interaction past interaction_events_max; nothing was stored"),
        )
        .with_field("interaction_id"),
    };
    Some(ApiError { errors, ..refusal })
}

/// A conflict's indexes (its own and an earlier event's) mapped through `index_of`.
fn renumber(err: SubmitError, index_of: impl Fn(usize) -> usize) -> SubmitError {
    match err {
        SubmitError::Conflict(mut conflicts) => {
            for conflict in &mut conflicts {
                conflict.index = index_of(conflict.index);
                if let Holder::Earlier(earlier) = conflict.holder {
                    conflict.holder = Holder::Earlier(index_of(earlier));
                }
            }
            SubmitError::Conflict(conflicts)
        }
        other => other,
    }
}
