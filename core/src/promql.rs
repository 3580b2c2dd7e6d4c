//! A tenant's PromQL, scoped to the tenant: every series the query selects carries
//! `tenant_id="<id>"`, whatever the query says. The tenant API runs a tenant's query only
//! after [`scope_to_tenant`] rewrote it (what prom-label-proxy does in front of Prometheus,
//! with its `-error-on-replace`: a selector that names another tenant is refused, never
//! silently rewritten, so the caller learns that the query was not what it asked).
//!
//! The query is parsed (promql-parser), every vector selector (plain, inside a range, a
//! subquery, a function's arguments, both sides of a binary operator, each `or` alternative
//! of a selector) gets the matcher, and the tree is printed back. No IO.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};

/// The label every customer series carries (Prometheus' HTTP SD gives it to each server's
/// targets; SPEC.md "Observability").
pub const TENANT_LABEL: &str = "tenant_id";

/// Why a tenant's query is refused (answered 400 in Prometheus' error shape, `bad_data`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not PromQL.
    #[error("parse error: {0}")]
    Parse(String),
    /// A selector names a tenant in a way other than `tenant_id="<this tenant>"`.
    #[error(
        "the query may not choose the tenant: `{TENANT_LABEL}` is set to this tenant by the node (found `{0}`)"
    )]
    TenantMatcher(String),
}

/// `query` with `tenant_id="<tenant>"` enforced on every selector. A selector that already
/// has exactly that matcher keeps it; any other matcher on `tenant_id` (another id, `!=`, a
/// regular expression) is refused.
pub fn scope_to_tenant(query: &str, tenant: i64) -> Result<String, ScopeError> {
    let mut expr = parser::parse(query).map_err(ScopeError::Parse)?;
    let id = tenant.to_string();
    scope(&mut expr, &id)?;
    Ok(expr.to_string())
}

fn scope(expr: &mut Expr, id: &str) -> Result<(), ScopeError> {
    match expr {
        Expr::VectorSelector(vs) => scope_selector(vs, id),
        Expr::MatrixSelector(ms) => scope_selector(&mut ms.vs, id),
        Expr::Aggregate(a) => {
            scope(&mut a.expr, id)?;
            match &mut a.param {
                Some(param) => scope(param, id),
                None => Ok(()),
            }
        }
        Expr::Unary(u) => scope(&mut u.expr, id),
        Expr::Binary(b) => {
            scope(&mut b.lhs, id)?;
            scope(&mut b.rhs, id)
        }
        Expr::Paren(p) => scope(&mut p.expr, id),
        Expr::Subquery(s) => scope(&mut s.expr, id),
        Expr::Call(call) => call.args.args.iter_mut().try_for_each(|arg| scope(arg, id)),
        // Literals select nothing; the parser never makes extensions.
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Ok(()),
    }
}

fn scope_selector(vs: &mut VectorSelector, id: &str) -> Result<(), ScopeError> {
    let matchers = &mut vs.matchers;
    // A selector with `or` alternatives is the union of them (its plain list is unused).
    if matchers.or_matchers.is_empty() {
        scope_matchers(&mut matchers.matchers, id)
    } else {
        matchers
            .or_matchers
            .iter_mut()
            .try_for_each(|alternative| scope_matchers(alternative, id))
    }
}

/// One conjunction of matchers: refuse a foreign tenant matcher, add ours unless present.
fn scope_matchers(matchers: &mut Vec<Matcher>, id: &str) -> Result<(), ScopeError> {
    let mut present = false;
    for m in matchers.iter().filter(|m| m.name == TENANT_LABEL) {
        if m.op == MatchOp::Equal && m.value == id {
            present = true;
        } else {
            return Err(ScopeError::TenantMatcher(m.to_string()));
        }
    }
    if !present {
        matchers.push(Matcher::new(MatchOp::Equal, TENANT_LABEL, id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selectors of a (scoped) query, each as its matchers' text, sorted.
    fn tenant_matchers(query: &str) -> Vec<String> {
        let mut found = Vec::new();
        fn walk(expr: &Expr, found: &mut Vec<String>) {
            match expr {
                Expr::VectorSelector(vs) => collect(vs, found),
                Expr::MatrixSelector(ms) => collect(&ms.vs, found),
                Expr::Aggregate(a) => {
                    walk(&a.expr, found);
                    if let Some(p) = &a.param {
                        walk(p, found);
                    }
                }
                Expr::Unary(u) => walk(&u.expr, found),
                Expr::Binary(b) => {
                    walk(&b.lhs, found);
                    walk(&b.rhs, found);
                }
                Expr::Paren(p) => walk(&p.expr, found),
                Expr::Subquery(s) => walk(&s.expr, found),
                Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, found)),
                _ => {}
            }
        }
        fn collect(vs: &VectorSelector, found: &mut Vec<String>) {
            let or = &vs.matchers.or_matchers;
            let sets = if or.is_empty() {
                vec![&vs.matchers.matchers]
            } else {
                or.iter().collect()
            };
            for set in sets {
                let tenant: Vec<String> = set
                    .iter()
                    .filter(|m| m.name == TENANT_LABEL)
                    .map(ToString::to_string)
                    .collect();
                found.push(tenant.join(","));
            }
        }
        walk(&parser::parse(query).unwrap(), &mut found);
        found
    }

    #[test]
    fn every_selector_gets_the_tenant_and_the_query_still_parses() {
        for query in [
            "up",
            "node_load1{instance=\"a:9100\"}",
            "sum by (vps) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))",
            "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100",
            "max_over_time(up[1h:5m] offset 1m)",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
            "-up + on(vps) group_left node_load5",
            "topk(3, node_load1)",
            "count_values(\"v\", up)",
            "label_replace(up, \"a\", \"$1\", \"instance\", \"(.*)\")",
            "{__name__=~\"node_.*\"}",
            "up{vps=\"a\" or vps=\"b\"}",
            "up{tenant_id=\"7\"}",
            "time() - 1",
            "vector(1)",
        ] {
            let scoped = scope_to_tenant(query, 7).unwrap_or_else(|e| panic!("{query}: {e}"));
            let matchers = tenant_matchers(&scoped);
            assert!(
                matchers.iter().all(|m| m == "tenant_id=\"7\""),
                "{query} -> {scoped}: {matchers:?}"
            );
            // The same query shape: scoping a scoped query changes nothing.
            assert_eq!(scope_to_tenant(&scoped, 7).unwrap(), scoped, "{query}");
        }
    }

    #[test]
    fn a_selector_naming_another_tenant_is_refused_not_rewritten() {
        for query in [
            "up{tenant_id=\"8\"}",
            "up{tenant_id!=\"7\"}",
            "up{tenant_id=~\".*\"}",
            "up{tenant_id!~\"7\"}",
            "sum(up) + sum(up{tenant_id=\"8\"})",
            "up{vps=\"a\" or tenant_id=\"8\"}",
            "up{tenant_id=\"7\",tenant_id=\"8\"}",
        ] {
            let err = scope_to_tenant(query, 7).unwrap_err();
            assert!(
                matches!(err, ScopeError::TenantMatcher(_)),
                "{query}: {err}"
            );
            assert!(err.to_string().contains("tenant_id"), "{err}");
        }
    }

    #[test]
    fn what_is_not_promql_is_a_parse_error() {
        for query in ["sum(", "up{", "1 +", "up[5m", "", "\"unterminated"] {
            let err = scope_to_tenant(query, 7).unwrap_err();
            assert!(matches!(err, ScopeError::Parse(_)), "{query}: {err}");
        }
    }

    #[test]
    fn literals_alone_select_nothing_and_stay_as_they_are() {
        assert_eq!(scope_to_tenant("1 + 2", 7).unwrap(), "1 + 2");
        assert!(tenant_matchers(&scope_to_tenant("\"x\"", 7).unwrap()).is_empty());
    }
}
