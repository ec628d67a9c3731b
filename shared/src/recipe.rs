//! Recipes: how the `erp_browser` connector drives an ERP's web pages, as data. A recipe is a
//! TOML file per kind of ERP with four lists of steps (`login`, `open_worksheet`, `read_lines`,
//! `add_line`); adding an ERP means writing one, not code. `docs/recipes.md` teaches the format.
//!
//! Parsing checks every step: its kind, its keys, and the template variables it uses, and an
//! error names the list and the step (`add_line step 3 (fill): unknown variable {prodcut}`).

use serde::{Deserialize, Serialize};

/// The variables a step's text can use, filled from the job and the tenant.
pub const VARIABLES: [&str; 9] = [
    "base_url",
    "worksheet",
    "product_nr",
    "amount",
    "reference",
    "uniqueid",
    "workshop",
    "username",
    "password",
];

/// The timeout of a step that does not set its own.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// A parsed recipe, as the api hands it to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    /// A selector found only on the login page: met where another page was expected, the session
    /// has expired and the connector logs in again.
    pub logged_out: String,
    /// A selector shown when the ERP refused the credentials (`ERP_LOGIN_FAILED`).
    pub login_failed: String,
    pub login: Vec<Step>,
    pub open_worksheet: Vec<Step>,
    pub read_lines: Vec<Step>,
    pub add_line: Vec<Step>,
}

/// One step, with how long it may wait for what it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub action: Action,
    pub timeout_ms: u64,
}

/// What a step does. Texts are templates (`{worksheet}`); a URL starting with `/` is relative to
/// the target's `base_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Loads a page.
    Open {
        url: String,
    },
    /// Types `value` into the field `selector` finds (cleared first).
    Fill {
        selector: String,
        value: String,
    },
    Click {
        selector: String,
    },
    /// Waits until `selector` finds an element.
    Wait {
        selector: String,
    },
    /// Waits until the page's text contains `text`.
    WaitText {
        text: String,
    },
    /// In the rows `rows` finds, the first whose `cell` text equals `equals`; clicks `click`
    /// inside it. No such row fails the job with `missing` (`ERP_WORKSHEET_NOT_FOUND`).
    PickRow {
        rows: String,
        cell: String,
        equals: String,
        click: String,
        missing: String,
    },
    /// Reads the text of `cell` in every row `rows` finds: the lines already there.
    ReadLines {
        rows: String,
        cell: String,
    },
    /// Fails the attempt unless the text of `selector` contains `contains`.
    Assert {
        selector: String,
        contains: String,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Open { .. } => "open",
            Action::Fill { .. } => "fill",
            Action::Click { .. } => "click",
            Action::Wait { .. } => "wait",
            Action::WaitText { .. } => "wait_text",
            Action::PickRow { .. } => "pick_row",
            Action::ReadLines { .. } => "read_lines",
            Action::Assert { .. } => "assert",
        }
    }

    /// The step's texts that are templates, with whether a secret may appear in each.
    fn templates(&self) -> Vec<(&str, bool)> {
        match self {
            Action::Open { url } => vec![(url, false)],
            Action::Fill { value, .. } => vec![(value, true)],
            Action::WaitText { text } => vec![(text, false)],
            Action::PickRow { equals, .. } => vec![(equals, false)],
            Action::Assert { contains, .. } => vec![(contains, false)],
            Action::Click { .. } | Action::Wait { .. } | Action::ReadLines { .. } => vec![],
        }
    }
}

/// The step kinds, each with the keys it takes besides its own and `timeout_ms`.
const KINDS: [(&str, &[&str]); 8] = [
    ("open", &[]),
    ("fill", &["value"]),
    ("click", &[]),
    ("wait", &[]),
    ("wait_text", &[]),
    ("pick_row", &["cell", "equals", "click", "missing"]),
    ("read_lines", &["cell"]),
    ("assert", &["contains"]),
];

/// The recipe file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    logged_out: String,
    login_failed: String,
    login: Vec<toml::Table>,
    open_worksheet: Vec<toml::Table>,
    read_lines: Vec<toml::Table>,
    add_line: Vec<toml::Table>,
}

impl Recipe {
    /// Parses and checks a recipe; the error names what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let timeout = file.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let list = |name: &str, steps: &[toml::Table]| -> Result<Vec<Step>, String> {
            if steps.is_empty() {
                return Err(format!("`{name}` has no steps"));
            }
            steps
                .iter()
                .enumerate()
                .map(|(i, t)| step(t, timeout).map_err(|e| format!("{name} step {}: {e}", i + 1)))
                .collect()
        };
        let recipe = Recipe {
            name: file.name,
            logged_out: file.logged_out,
            login_failed: file.login_failed,
            login: list("login", &file.login)?,
            open_worksheet: list("open_worksheet", &file.open_worksheet)?,
            read_lines: list("read_lines", &file.read_lines)?,
            add_line: list("add_line", &file.add_line)?,
        };
        if !recipe
            .read_lines
            .iter()
            .any(|s| matches!(s.action, Action::ReadLines { .. }))
        {
            return Err("`read_lines` needs a read_lines step".into());
        }
        Ok(recipe)
    }
}

fn step(t: &toml::Table, default_timeout: u64) -> Result<Step, String> {
    let kinds: Vec<&str> = KINDS
        .iter()
        .map(|(k, _)| *k)
        // `click` is also a key of pick_row.
        .filter(|k| t.contains_key(*k) && !(*k == "click" && t.contains_key("pick_row")))
        .collect();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            let first = t.keys().next().map_or("nothing", String::as_str);
            return Err(format!(
                "unknown step `{first}` (a step is one of: {})",
                known.join(", ")
            ));
        }
        many => return Err(format!("one step, one kind: found {}", many.join(" and "))),
    };
    let extra = KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[][..], |k| k.1);
    for key in t.keys() {
        if key != kind && key != "timeout_ms" && !extra.contains(&key.as_str()) {
            return Err(format!("({kind}): unknown key `{key}`"));
        }
    }
    let text = |key: &str| -> Result<String, String> {
        match t.get(key) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("({kind}): `{key}` must be a string")),
            None => Err(format!("({kind}): `{key}` is required")),
        }
    };
    let action = match kind {
        "open" => Action::Open { url: text("open")? },
        "fill" => Action::Fill {
            selector: text("fill")?,
            value: text("value")?,
        },
        "click" => Action::Click {
            selector: text("click")?,
        },
        "wait" => Action::Wait {
            selector: text("wait")?,
        },
        "wait_text" => Action::WaitText {
            text: text("wait_text")?,
        },
        "pick_row" => Action::PickRow {
            rows: text("pick_row")?,
            cell: text("cell")?,
            equals: text("equals")?,
            click: text("click")?,
            missing: match t.get("missing") {
                Some(_) => text("missing")?,
                None => "ERP_WORKSHEET_NOT_FOUND".into(),
            },
        },
        "read_lines" => Action::ReadLines {
            rows: text("read_lines")?,
            cell: text("cell")?,
        },
        _ => Action::Assert {
            selector: text("assert")?,
            contains: text("contains")?,
        },
    };
    for (template, secret_ok) in action.templates() {
        for var in variables(template) {
            if !VARIABLES.contains(&var) {
                return Err(format!(
                    "({kind}): unknown variable {{{var}}} (known: {})",
                    VARIABLES.join(", ")
                ));
            }
            if var == "password" && !secret_ok {
                return Err(format!(
                    "({kind}): {{password}} may only be typed into a field (fill), never \
                     put in a URL or a text that could be logged"
                ));
            }
        }
    }
    let timeout_ms = match t.get("timeout_ms") {
        None => default_timeout,
        Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
        Some(_) => return Err(format!("({kind}): `timeout_ms` must be a positive integer")),
    };
    Ok(Step { action, timeout_ms })
}

/// The `{name}`s in a template.
fn variables(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(v, _)| v))
}

/// Fills a template's `{name}`s from `value` (unknown names stay as written).
pub fn render(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .split_once('}')
            .and_then(|(name, tail)| Some((value(name)?, tail)))
        {
            Some((v, tail)) => {
                out.push_str(&v);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIM: &str = include_str!("../../deploy/recipes/ferry-sim-web.toml");

    #[test]
    fn the_shipped_recipe_parses() {
        let r = Recipe::parse(SIM).unwrap();
        assert_eq!(r.login.len(), 5);
        assert!(r.add_line.iter().any(|s| s.action.name() == "fill"));
    }

    #[test]
    fn a_bad_step_is_named() {
        let bad = SIM.replacen("{ click = \"#login\"", "{ clik = \"#login\"", 1);
        let e = Recipe::parse(&bad).unwrap_err();
        assert!(e.starts_with("login step 4: unknown step `clik`"), "{e}");
        let bad = SIM.replacen("{product_nr}", "{prodcut}", 1);
        let e = Recipe::parse(&bad).unwrap_err();
        assert!(
            e.contains("add_line step") && e.contains("{prodcut}"),
            "{e}"
        );
        let bad = SIM.replacen(
            "{ wait = \"#worksheets\"",
            "{ wait = \"#worksheets\", colour = \"red\"",
            1,
        );
        let e = Recipe::parse(&bad).unwrap_err();
        assert!(e.contains("unknown key `colour`"), "{e}");
        let bad = SIM.replacen(
            "open = \"/web/worksheets\"",
            "open = \"/web/{password}\"",
            1,
        );
        let e = Recipe::parse(&bad).unwrap_err();
        assert!(e.contains("{password} may only be typed"), "{e}");
    }

    #[test]
    fn templates_fill_known_names_and_keep_the_rest() {
        let v = |n: &str| (n == "worksheet").then(|| "558".to_string());
        assert_eq!(render("/ws/{worksheet}/{x} {", v), "/ws/558/{x} {");
        assert_eq!(variables("a {b} c {d}").collect::<Vec<_>>(), ["b", "d"]);
    }
}
