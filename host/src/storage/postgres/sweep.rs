//! The host's sweep of the component role's backends: the last line behind
//! the statement timeout, the idle-transaction timeout, the closed
//! connection and the screen.

use std::time::Duration;

use sqlx::PgPool;

/// How often the host looks for a component backend that outlived every limit.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Every [`SWEEP_EVERY`], end the component role's backends that have
/// been busy (a statement, or a transaction left open) for longer than
/// any statement may run, or that hold an advisory lock. The statement
/// timeout, the idle-transaction timeout and the closed connection
/// should each have ended the first kind, and the screen refuses the
/// functions that take the second (which could block the host's own
/// locks: migrations, grants): one still there has found a way around
/// them. The host's role is a member of the component role (the DBA's
/// script), which lets it. Only backends of its own database: another
/// service on the server is its own host's to watch.
pub(super) async fn end_overdue_backends(host: PgPool, role: String, statement_timeout: Duration) {
    let overdue = (statement_timeout + Duration::from_secs(1)).as_secs_f64();
    let mut failing = false;
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let ended = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity a \
             WHERE usename = $1 AND datname = current_database() AND ((state <> 'idle' AND state_change < now() - make_interval(secs => $2)) \
             OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'))",
        )
        .bind(&role)
        .bind(overdue)
        .fetch_one(&host)
        .await;
        match ended {
            Ok(0) => failing = false,
            Ok(ended) => {
                failing = false;
                tracing::warn!(
                    ended,
                    "ended component backends that outlived every time limit or held an advisory lock"
                );
            }
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "cannot look for overdue component backends; retrying");
            }
            Err(_) => {}
        }
    }
}
