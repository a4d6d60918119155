//! `GET /api/v1/runs/{id}/events`: a run's transitions as Server-Sent Events, replayed from the history and then
//! live until the run ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use qila_engine::RunChanged;
use qila_store::{Role, Store};
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
}

struct Feed {
    store: Store,
    run: String,
    after: i64,
    changes: broadcast::Receiver<RunChanged>,
    queue: VecDeque<Event>,
    done: bool,
}

impl Feed {
    /// Queues the transitions committed after the last one sent.
    async fn fetch(&mut self) -> bool {
        match self.store.transitions(&self.run, self.after).await {
            Ok(list) => {
                for t in list {
                    self.after = t.seq;
                    let data = serde_json::to_string(&t).unwrap_or_else(|_| "{}".into());
                    self.queue.push_back(
                        Event::default()
                            .id(t.seq.to_string())
                            .event("transition")
                            .data(data),
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read transitions for an event stream");
                self.done = true;
                false
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            if !self.fetch().await {
                continue;
            }
            if !self.queue.is_empty() {
                continue;
            }
            let ended =
                matches!(self.store.run(&self.run).await, Ok(Some(r)) if r.status.is_terminal());
            if ended {
                // The run's last transitions were committed with its end: read them, then say it is over.
                self.fetch().await;
                self.queue
                    .push_back(Event::default().event("end").data("{}"));
                self.done = true;
                continue;
            }
            loop {
                match self.changes.recv().await {
                    Ok(change) if *change.run_id == *self.run => break,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        self.done = true;
                        break;
                    }
                }
            }
        }
    }
}

pub(crate) async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let store = s.orchestrator.store().clone();
    if store.run(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no run `{id}`")));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.after)
        .unwrap_or(0);
    // Subscribed before the replay, so nothing committed in between is missed.
    let feed = Feed {
        changes: s.orchestrator.subscribe(),
        store,
        run: id,
        after,
        queue: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(feed, Feed::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
