//! A `timeseries` table's options (its policy options in the metadata).

use datalayer_cluster::error::{Error, Result};
use datalayer_cluster::policy::PolicyOptions;
use datalayer_cluster::strong::Acks;
use serde::{Deserialize, Serialize};

/// Default out-of-order window: an hour, as Prometheus's `out_of_order_time_window`
/// would often be set.
pub const DEFAULT_OUT_OF_ORDER_MS: u64 = 3_600_000;
/// Default cap of series per week of a table.
pub const DEFAULT_MAX_SERIES: u64 = 1_000_000;
/// How far ahead of the node's clock a sample may be.
pub const MAX_FUTURE_MS: i64 = 10 * 60_000;
/// Retention, out-of-order window: at most ten years' worth.
const MAX_WEEKS: u32 = 522;

/// A `timeseries` table's options. Every field has a default (`null` options are
/// all defaults); fields are only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TsOptions {
    /// Whole weeks kept, the current one included; 0 keeps everything. A week
    /// before them is deleted, and writes to it are refused.
    pub retention_weeks: u32,
    /// How far behind the node's clock a sample may be (ms): later ones are
    /// refused. Backfilling history needs a window that reaches back to it.
    pub out_of_order_window_ms: u64,
    /// Series per week at most (the cardinality guard): a write that would add
    /// more is refused.
    pub max_series_per_week: u64,
    /// Acks of writes that do not ask for their own.
    pub default_acks: Acks,
    /// Whole weeks whose 5-minute rollups are kept, the current one included; 0
    /// keeps none. When set, it is more than `retention_weeks` (which is then not
    /// 0): a week past raw retention keeps its rollups, series and label index, and
    /// queries over it are answered from the rollups ([`crate::rollup`]).
    pub rollup_retention_weeks: u32,
}

impl Default for TsOptions {
    fn default() -> TsOptions {
        TsOptions {
            retention_weeks: 0,
            out_of_order_window_ms: DEFAULT_OUT_OF_ORDER_MS,
            max_series_per_week: DEFAULT_MAX_SERIES,
            default_acks: Acks::All,
            rollup_retention_weeks: 0,
        }
    }
}

impl TsOptions {
    /// The options of a table (`null` is every default).
    pub fn of(options: &PolicyOptions) -> Result<TsOptions> {
        if options.is_null() {
            return Ok(TsOptions::default());
        }
        TsOptions::deserialize(options)
            .map_err(|e| Error::invalid("options", format!("timeseries table options: {e}")))
    }

    /// These options as a table's [`PolicyOptions`].
    pub fn to_options(self) -> PolicyOptions {
        serde_json::to_value(self).expect("timeseries options always encode")
    }

    /// Checks the options against their limits and the replication factor.
    pub fn validate(&self, replication_factor: u32) -> Result<()> {
        if self.retention_weeks > MAX_WEEKS {
            return Err(Error::invalid(
                "retention_weeks",
                format!("at most {MAX_WEEKS} weeks (0 keeps everything)"),
            ));
        }
        let max_window = u64::from(MAX_WEEKS) * crate::week::WEEK_MS as u64;
        if self.out_of_order_window_ms == 0 || self.out_of_order_window_ms > max_window {
            return Err(Error::invalid(
                "out_of_order_window_ms",
                format!("between 1 ms and {max_window} ms ({MAX_WEEKS} weeks)"),
            ));
        }
        if self.rollup_retention_weeks > 0
            && (self.retention_weeks == 0
                || self.rollup_retention_weeks <= self.retention_weeks
                || self.rollup_retention_weeks > MAX_WEEKS)
        {
            return Err(Error::invalid(
                "rollup_retention_weeks",
                format!(
                    "rollups are kept longer than the raw samples: more than retention_weeks ({}, which must not be 0 = everything) and at most {MAX_WEEKS} (0 keeps no rollups)",
                    self.retention_weeks
                ),
            ));
        }
        if self.max_series_per_week == 0 || self.max_series_per_week > 100_000_000 {
            return Err(Error::invalid(
                "max_series_per_week",
                "between 1 and 100000000",
            ));
        }
        // The acks are strong's, checked as strong checks them.
        datalayer_cluster::strong::StrongOptions {
            default_acks: self.default_acks,
        }
        .validate(replication_factor)
    }

    /// The first week kept at `now_ms` (`None`: every week is kept).
    pub fn first_kept_week(&self, now_ms: i64) -> Option<crate::Week> {
        (self.retention_weeks > 0)
            .then(|| crate::Week(crate::Week::of(now_ms).0 - i64::from(self.retention_weeks) + 1))
    }

    /// The first week whose rows are kept at `now_ms`, as rollups or raw (`None`:
    /// every week is kept). Without rollups it is [`Self::first_kept_week`].
    pub fn first_rollup_week(&self, now_ms: i64) -> Option<crate::Week> {
        if self.rollup_retention_weeks == 0 {
            return self.first_kept_week(now_ms);
        }
        Some(crate::Week(
            crate::Week::of(now_ms).0 - i64::from(self.rollup_retention_weeks) + 1,
        ))
    }

    /// Whether `week` is served from its rollups at `now_ms` (past raw retention,
    /// within the rollups').
    pub fn rolled_up(&self, week: crate::Week, now_ms: i64) -> bool {
        self.rollup_retention_weeks > 0
            && self.first_kept_week(now_ms).is_some_and(|k| week < k)
            && self.first_rollup_week(now_ms).is_some_and(|k| week >= k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_check_and_round_trip() {
        assert_eq!(
            TsOptions::of(&serde_json::Value::Null).unwrap(),
            TsOptions::default()
        );
        let o = TsOptions::of(&serde_json::json!({"retention_weeks": 4})).unwrap();
        assert_eq!(o.retention_weeks, 4);
        assert_eq!(TsOptions::of(&o.to_options()).unwrap(), o);
        assert!(TsOptions::of(&serde_json::json!({"retention": 4})).is_err());
        assert!(
            TsOptions {
                retention_weeks: 600,
                ..o
            }
            .validate(3)
            .is_err()
        );
        assert!(
            TsOptions {
                out_of_order_window_ms: 0,
                ..o
            }
            .validate(3)
            .is_err()
        );
        assert!(
            TsOptions {
                default_acks: Acks::Count(4),
                ..o
            }
            .validate(3)
            .is_err()
        );
        assert!(o.validate(3).is_ok());
        // Rollups outlive the raw samples, or are refused.
        let rolled = TsOptions {
            rollup_retention_weeks: 10,
            ..o
        };
        assert!(rolled.validate(3).is_ok());
        for (raw, rollups) in [(0, 10), (4, 4), (4, 2), (4, 600)] {
            let bad = TsOptions {
                retention_weeks: raw,
                rollup_retention_weeks: rollups,
                ..o
            };
            assert!(bad.validate(3).is_err(), "{raw} {rollups}");
        }
        // Four weeks kept: this week and the three before it.
        let now = crate::Week(2900).start_ms() + 5;
        assert_eq!(o.first_kept_week(now), Some(crate::Week(2897)));
        assert_eq!(TsOptions::default().first_kept_week(now), None);
        assert_eq!(o.first_rollup_week(now), Some(crate::Week(2897)));
        assert_eq!(rolled.first_rollup_week(now), Some(crate::Week(2891)));
        assert!(rolled.rolled_up(crate::Week(2896), now));
        assert!(rolled.rolled_up(crate::Week(2891), now));
        assert!(!rolled.rolled_up(crate::Week(2890), now));
        assert!(!rolled.rolled_up(crate::Week(2897), now));
        assert!(!o.rolled_up(crate::Week(2896), now));
    }
}
