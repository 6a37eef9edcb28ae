//! Consul's `?filter=` expressions (the go-bexpr language), enough of them for the double.
//!
//! Consul parses the expression with hashicorp/go-bexpr and evaluates it against each result
//! item after the query ran (api-docs/features/filtering: "Filtering is executed on the
//! Consul server before data is returned"); a bad expression is a 400 `Failed to create
//! boolean expression evaluator`. The grammar followed here is the one that page documents:
//!
//! ```text
//! expr     := and ("or" and)*
//! and      := unary ("and" unary)*
//! unary    := "not" unary | "(" expr ")" | match
//! match    := selector ("==" | "!=") value
//!           | selector "is" ["not"] "empty"
//!           | value ["not"] "in" selector
//!           | selector ["not"] "contains" value
//! selector := Ident ("." Ident)*          e.g. Service.Meta.version, Node.Node, Service.Tags
//! value    := "double quoted" | `backticked` | bare word or number
//! ```
//!
//! Selectors are the item's JSON field names (what Consul's reflection exposes for
//! `CheckServiceNode`: `Node.*`, `Service.*`, `Checks.*`); a missing map key is an empty
//! value. `matches` (regular expressions) is not supported by the double: a 400 says so.

use serde_json::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a or b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a and b`.
    And(Box<Expr>, Box<Expr>),
    /// `not a`.
    Not(Box<Expr>),
    /// `selector == value` (`!=` is `Not(Equal)`).
    Equal(Vec<String>, String),
    /// `selector is empty`.
    Empty(Vec<String>),
    /// `value in selector` / `selector contains value`.
    Contains(Vec<String>, String),
}

/// Parses `text`; the error is Consul's 400 body.
pub fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!(
            "Failed to create boolean expression evaluator: unexpected {:?}",
            parser.tokens[parser.at]
        ));
    }
    Ok(expr)
}

/// Whether `item` matches.
pub fn eval(expr: &Expr, item: &Value) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, item) || eval(b, item),
        Expr::And(a, b) => eval(a, item) && eval(b, item),
        Expr::Not(a) => !eval(a, item),
        Expr::Equal(selector, want) => match lookup(item, selector) {
            Some(Value::String(s)) => s == want,
            Some(Value::Number(n)) => want.parse::<f64>().ok() == n.as_f64(),
            Some(Value::Bool(b)) => want.parse::<bool>().ok() == Some(*b),
            Some(Value::Null) | None => want.is_empty(),
            Some(_) => false,
        },
        Expr::Empty(selector) => match lookup(item, selector) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        },
        Expr::Contains(selector, want) => match lookup(item, selector) {
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(want)),
            Some(Value::Object(map)) => map.contains_key(want),
            Some(Value::String(s)) => s.contains(want.as_str()),
            _ => false,
        },
    }
}

fn lookup<'a>(item: &'a Value, selector: &[String]) -> Option<&'a Value> {
    let mut at = item;
    for part in selector {
        at = at.as_object()?.get(part)?;
    }
    Some(at)
}

// === tokens ===

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(&'static str),
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '=' | '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err(format!(
                        "Failed to create boolean expression evaluator: expected '=' after '{c}'"
                    ));
                }
                tokens.push(Token::Op(if c == '=' { "==" } else { "!=" }));
            }
            '"' | '`' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(
                            "Failed to create boolean expression evaluator: unterminated string"
                                .into(),
                        ),
                        Some('\\') if c == '"' => value.extend(chars.next()),
                        Some(end) if end == c => break,
                        Some(other) => value.push(other),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '=' | '!' | '"' | '`') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

// === parser ===

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.peek_word(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn next(&mut self) -> Result<Token, String> {
        let token = self.tokens.get(self.at).cloned().ok_or_else(|| {
            "Failed to create boolean expression evaluator: unexpected end of expression".to_owned()
        })?;
        self.at += 1;
        Ok(token)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            if self.next()? != Token::Close {
                return Err("Failed to create boolean expression evaluator: expected ')'".into());
            }
            return Ok(inner);
        }
        self.matcher()
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        let first = self.next()?;
        // `value [not] in selector`
        let negated_in = self.peek_word("not")
            && matches!(self.tokens.get(self.at + 1), Some(Token::Word(w)) if w == "in");
        if negated_in || self.peek_word("in") {
            self.at += if negated_in { 2 } else { 1 };
            let value = value_of(first)?;
            let selector = selector(self.next()?)?;
            let expr = Expr::Contains(selector, value);
            return Ok(if negated_in {
                Expr::Not(Box::new(expr))
            } else {
                expr
            });
        }
        let selector = selector(first)?;
        match self.next()? {
            Token::Op("==") => Ok(Expr::Equal(selector, value_of(self.next()?)?)),
            Token::Op("!=") => Ok(Expr::Not(Box::new(Expr::Equal(
                selector,
                value_of(self.next()?)?,
            )))),
            Token::Word(w) if w == "is" => {
                let not = self.eat_word("not");
                if !self.eat_word("empty") {
                    return Err(
                        "Failed to create boolean expression evaluator: expected 'empty'".into(),
                    );
                }
                let expr = Expr::Empty(selector);
                Ok(if not { Expr::Not(Box::new(expr)) } else { expr })
            }
            Token::Word(w) if w == "contains" => {
                Ok(Expr::Contains(selector, value_of(self.next()?)?))
            }
            Token::Word(w) if w == "not" && self.eat_word("contains") => Ok(Expr::Not(Box::new(
                Expr::Contains(selector, value_of(self.next()?)?),
            ))),
            Token::Word(w) if w == "matches" || w == "not" => Err(
                "consul-double: the `matches` operator (regular expressions) is not supported"
                    .into(),
            ),
            other => Err(format!(
                "Failed to create boolean expression evaluator: unexpected {other:?} after a selector"
            )),
        }
    }
}

fn value_of(token: Token) -> Result<String, String> {
    match token {
        Token::Quoted(v) | Token::Word(v) => Ok(v),
        other => Err(format!(
            "Failed to create boolean expression evaluator: expected a value, got {other:?}"
        )),
    }
}

/// A selector: dotted identifiers whose first part is one of the item's top-level fields.
fn selector(token: Token) -> Result<Vec<String>, String> {
    let Token::Word(word) = token else {
        return Err(format!(
            "Failed to create boolean expression evaluator: expected a selector, got {token:?}"
        ));
    };
    let parts: Vec<String> = word.split('.').map(str::to_owned).collect();
    if !matches!(parts[0].as_str(), "Node" | "Service" | "Checks")
        || parts.iter().any(String::is_empty)
    {
        return Err(format!("Selector {word:?} is not valid"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(expr: &str, expected: bool) {
        let item = json!({"Node": {"Node": "n1", "Meta": {"rack": "a"}},
            "Service": {"ID": "web-1", "Tags": ["v2", "eu"], "Port": 8080, "Meta": {"version": "2"}}});
        let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(eval(&parsed, &item), expected, "{expr}");
    }

    #[test]
    fn expressions() {
        check(r#"Service.Meta.version == "2""#, true);
        check(r#"Service.Meta.version != "2""#, false);
        check(r#""v2" in Service.Tags"#, true);
        check(r#""v3" not in Service.Tags"#, true);
        check(r#"Service.Tags contains "eu""#, true);
        check(r#"Service.Tags not contains "eu""#, false);
        check("Service.Port == 8080", true);
        check("Node.Meta.rack == a and not (Service.ID == web-2)", true);
        check(r#"Service.Meta.missing == "x" or Node.Node == n1"#, true);
        check("Service.Meta.missing is empty", true);
        check("Service.Tags is not empty", true);
        check("rack in Node.Meta", true);
    }

    #[test]
    fn errors() {
        for bad in [
            "Service.Meta.version ==",
            "Foo.Bar == 1",
            "(Service.ID == a",
            "Service.ID = a",
            "Service.ID matches \"a\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
