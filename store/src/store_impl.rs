//! The [`Store`](super::Store) impl both backends share.
//!
//! Most operations are the same statement and the same row handling on PostgreSQL and SQLite:
//! the SQL takes `$N` placeholders (sqlx binds `$N` by number on SQLite too) and standard
//! `CAST`s, and what differs per backend is reached through names the backend module defines
//! (its column list, row decoders, the way it stores a timestamp). The operations that differ
//! for a reason (the claim's locking, a batch's transaction, the clock a write takes its time
//! from, notifications) are inherent methods of each store, which the impl calls.

/// `impl Store` for one backend, expanded inside its module. sqlx's row and pool types differ
/// per database, so this is a macro emitting the whole item (as `inventory!` does), not generic
/// code. The module provides:
///
/// - `job_columns(Shape) -> String` and `job_from_row(&Row, Shape)`: the columns every job
///   query selects and their decoder; `failed_from_row(&Row)` for a failed_jobs listing
/// - the statements, with parameters in the order bound below: `PROBE_WRITE`, `QUEUE_COUNTS`,
///   `PAUSE_QUEUE`, `RELEASE_NODE`, `RESCUE_EXPIRED`, `FAILED_LISTING`, `FAILURES_BY_KIND`;
///   and the `stats_decoders!` functions
/// - `time_param(DateTime<Utc>)`: a timestamp as the backend stores it
/// - `bind_now(query)`: the current time where the backend binds it (SQLite: this process's
///   clock, as the statement's last parameter) or nothing (PostgreSQL says `now()` in SQL)
/// - the inherent methods called below for the operations written per backend (they return
///   sqlx's errors, turned into [`StoreError`](super::StoreError) here)
///
/// `db` is the sqlx database type; `begin` opens a write transaction (SQLite takes its write
/// lock at once: `BEGIN IMMEDIATE`).
macro_rules! store_impl {
    (
        $store:ty,
        db = $db:ty,
        backend = $backend:expr,
        migrations = $migrations:literal,
        begin = $begin:expr
    ) => {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!($migrations);

        /// `ENQUEUE` with the job's own columns bound as `$1`..`$6`; the backend binds the
        /// times after them.
        fn enqueue_query(
            job: &NewJob,
        ) -> sqlx::query::QueryScalar<'_, $db, i64, <$db as sqlx::Database>::Arguments> {
            sqlx::query_scalar(ENQUEUE)
                .bind(&job.queue)
                .bind(&job.kind)
                .bind(&job.payload)
                .bind(rows::max_attempts_param(job))
                .bind(rows::timeout_param(job))
                .bind(&job.unique_key)
        }

        /// Run a query selecting `job_columns(shape)` and decode its rows.
        async fn fetch_jobs<'c>(
            executor: impl sqlx::Executor<'c, Database = $db>,
            query: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>,
            shape: Shape,
        ) -> sqlx::Result<Vec<Job>> {
            let rows = query.fetch_all(executor).await?;
            rows.iter().map(|row| job_from_row(row, shape)).collect()
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<Duration, StoreError> {
                let start = Instant::now();
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(start.elapsed())
            }

            async fn probe_write(&self) -> Result<Duration, StoreError> {
                let start = Instant::now();
                let mut tx = self.pool.begin_with($begin).await?;
                bind_now(sqlx::query(PROBE_WRITE)).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(start.elapsed())
            }

            async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
                Ok(self.upsert_node(node).await?)
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            // === jobs ===

            async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
                rows::check_new_job(job)?;
                Ok(self.insert_job(job).await?)
            }

            async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
                let max = chom_core::limits::MAX_ENQUEUE_BATCH;
                if jobs.len() > max {
                    return Err(StoreError::Invalid(format!(
                        "a batch holds at most {max} jobs, got {}",
                        jobs.len()
                    )));
                }
                for (i, job) in jobs.iter().enumerate() {
                    rows::check_new_job(job).map_err(|e| match e {
                        StoreError::Invalid(why) => {
                            StoreError::Invalid(format!("jobs[{i}]: {why}"))
                        }
                        other => other,
                    })?;
                }
                if jobs.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(self.insert_jobs(jobs).await?)
            }

            async fn claim(
                &self,
                node: &str,
                queues: &[String],
                limit: u32,
            ) -> Result<Vec<Job>, StoreError> {
                if queues.is_empty() || limit == 0 {
                    return Ok(Vec::new());
                }
                let mut jobs = self.reserve(node, queues, limit).await?;
                rows::sort_claimed(&mut jobs, queues);
                Ok(jobs)
            }

            async fn complete(&self, node: &str, batch: &[Completion]) -> Result<(), StoreError> {
                if batch.is_empty() {
                    return Ok(());
                }
                Ok(self
                    .apply_completions(node, &SplitBatch::new(batch))
                    .await?)
            }

            async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
                let sql = format!("SELECT {} FROM jobs WHERE id = $1", job_columns(Shape::One));
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .as_ref()
                    .map(|row| job_from_row(row, Shape::One))
                    .transpose()?)
            }

            async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
                // Only constant text is formatted in; values are bound.
                let sql = format!(
                    "SELECT {} FROM jobs
                     WHERE (CAST($1 AS TEXT) IS NULL OR queue = $1)
                       AND (CAST($2 AS TEXT) IS NULL OR state = $2)
                     ORDER BY id DESC LIMIT $3",
                    job_columns(Shape::Listing)
                );
                let listing = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&filter.queue)
                    .bind(filter.state.map(|s| s.as_str()))
                    .bind(i64::from(filter.limit));
                Ok(fetch_jobs(&self.pool, listing, Shape::Listing).await?)
            }

            async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStats>, StoreError> {
                let counted = bind_now(sqlx::query(QUEUE_COUNTS))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(queue_counts_from_row)
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                let paused = self.paused_queues().await?;
                Ok(rows::merge_stats(queues, counted, &paused))
            }

            // === queue control ===

            async fn pause_queue(&self, queue: &str) -> Result<(), StoreError> {
                bind_now(sqlx::query(PAUSE_QUEUE).bind(queue))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn resume_queue(&self, queue: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
                    .bind(queue)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn paused_queues(&self) -> Result<Vec<String>, StoreError> {
                Ok(
                    sqlx::query_scalar("SELECT queue FROM queue_pauses ORDER BY queue")
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            // === maintenance ===

            async fn release_node(&self, node: &str) -> Result<u64, StoreError> {
                let result = bind_now(sqlx::query(RELEASE_NODE).bind(node))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected())
            }

            async fn rescue_expired(
                &self,
                cutoff: DateTime<Utc>,
                except_node: &str,
            ) -> Result<u64, StoreError> {
                let query = sqlx::query(RESCUE_EXPIRED)
                    .bind(time_param(cutoff))
                    .bind(except_node);
                let result = bind_now(query).execute(&self.pool).await?;
                Ok(result.rows_affected())
            }

            async fn kill_stuck(
                &self,
                cutoff: DateTime<Utc>,
                reason: &str,
            ) -> Result<Vec<i64>, StoreError> {
                let mut ids = self.fail_stuck(cutoff, &rows::stored_error(reason)).await?;
                ids.sort_unstable();
                Ok(ids)
            }

            async fn prune_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
                Ok(self.prune_finished(time_param(cutoff)).await?)
            }

            async fn heartbeat(
                &self,
                node: &str,
                live_since: DateTime<Utc>,
                jobs_running: u64,
            ) -> Result<u64, StoreError> {
                Ok(self.touch_node(node, live_since, jobs_running).await?)
            }

            async fn cluster_nodes(
                &self,
                live_since: DateTime<Utc>,
            ) -> Result<Vec<ClusterNode>, StoreError> {
                Ok(self.live_nodes(live_since).await?)
            }

            // === dead letters ===

            async fn failed_jobs(&self, limit: u32) -> Result<Vec<FailedJob>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(FAILED_LISTING.as_str()))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(failed_from_row).collect::<Result<_, _>>()?)
            }

            async fn retry_failed(&self, id: Option<i64>) -> Result<Vec<i64>, StoreError> {
                let mut ids = self.requeue_failed(id).await?;
                ids.sort_unstable();
                Ok(ids)
            }

            async fn prune_failed(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
                self.delete_before("DELETE FROM failed_jobs WHERE failed_at < $1", cutoff)
                    .await
            }

            async fn failures_by_kind(
                &self,
                since: DateTime<Utc>,
            ) -> Result<Vec<KindFailures>, StoreError> {
                let rows = sqlx::query(FAILURES_BY_KIND)
                    .bind(time_param(since))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .iter()
                    .map(kind_failures_from_row)
                    .collect::<Result<_, sqlx::Error>>()?)
            }

            async fn failed_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
                let n: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM failed_jobs WHERE failed_at >= $1")
                        .bind(time_param(since))
                        .fetch_one(&self.pool)
                        .await?;
                Ok(rows::count(n))
            }

            async fn listen(
                &self,
            ) -> Result<Option<futures::stream::BoxStream<'static, ()>>, StoreError> {
                Ok(self.job_notifications().await?)
            }
        }

        impl $store {
            /// Run a `DELETE ... WHERE <time> < $1` (a prune); returns how many rows went.
            async fn delete_before(
                &self,
                sql: &'static str,
                cutoff: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                let result = sqlx::query(sql)
                    .bind(time_param(cutoff))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected())
            }
        }
    };
}
