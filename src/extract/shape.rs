//! The parts of a JSON body a rule reads, and a parser that builds only those parts.
//!
//! Most rules read a few definite paths (`$.action`, `$.context.runId`). Building the whole
//! body as a `serde_json::Value` allocates every key, string and map of the document; here the
//! parser walks the same bytes, checks them exactly as the full parse does (syntax, UTF-8,
//! nesting depth), and materialises only the subtrees those paths end in, plus the objects and
//! arrays on the way. A definite path therefore evaluates to the same value on the pruned
//! document as on the whole one. Any other path (`..`, wildcards, filters, negative indices,
//! `$` itself) makes the rule need the whole document.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::jsonpath::{JaywayPath, Step};

/// What a rule needs of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Every value: some path is not definite, or reads the root.
    Whole,
    /// Only the nodes these definite paths reach.
    Paths(Node),
}

/// One level of the paths: which members and elements continue, and whether the value here is
/// read in full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    whole: bool,
    names: Vec<(String, Node)>,
    indices: Vec<(usize, Node)>,
}

impl Node {
    fn insert(&mut self, steps: &[Step]) {
        let Some((first, rest)) = steps.split_first() else {
            self.whole = true;
            return;
        };
        let child = match first {
            Step::Name(name) => match self.names.iter().position(|(n, _)| n == name) {
                Some(i) => &mut self.names[i].1,
                None => {
                    self.names.push((name.clone(), Node::default()));
                    &mut self.names.last_mut().expect("just pushed").1
                }
            },
            Step::Index(index) => match self.indices.iter().position(|(i, _)| i == index) {
                Some(i) => &mut self.indices[i].1,
                None => {
                    self.indices.push((*index, Node::default()));
                    &mut self.indices.last_mut().expect("just pushed").1
                }
            },
        };
        child.insert(rest);
    }

    fn member(&self, name: &str) -> Option<&Node> {
        self.names
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, node)| node)
    }

    fn element(&self, index: usize) -> Option<&Node> {
        self.indices
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, node)| node)
    }

    fn last_index(&self) -> Option<usize> {
        self.indices.iter().map(|(i, _)| *i).max()
    }
}

impl Shape {
    /// The union of what `paths` read.
    pub fn of<'p>(paths: impl IntoIterator<Item = &'p JaywayPath>) -> Self {
        let mut root = Node::default();
        for path in paths {
            match path.steps() {
                Some(steps) if !steps.is_empty() => root.insert(steps),
                _ => return Shape::Whole,
            }
        }
        Shape::Paths(root)
    }

    /// Parses `text`, failing exactly where a full parse into `Value` would fail.
    pub fn parse(&self, text: &str) -> serde_json::Result<Value> {
        match self {
            Shape::Whole => serde_json::from_str(text),
            Shape::Paths(root) => {
                let mut deserializer = serde_json::Deserializer::from_str(text);
                let value = Prune(root).deserialize(&mut deserializer)?;
                deserializer.end()?;
                Ok(value)
            }
        }
    }
}

/// Builds the value at one node of the shape.
struct Prune<'n>(&'n Node);

impl<'de> DeserializeSeed<'de> for Prune<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            Value::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Prune<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // A scalar where the path goes on selects nothing below it, whatever its value; it is kept
    // so the pruned document still has the same kinds of node as the body.
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Value, E> {
        Ok(Value::String(String::new()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        let last = self.0.last_index();
        let mut index = 0usize;
        loop {
            let more = match (self.0.element(index), last) {
                (Some(node), _) => seq.next_element_seed(Prune(node))?.map(|v| items.push(v)),
                // Placeholders keep later wanted elements at their index.
                (None, Some(last)) if index < last => {
                    seq.next_element::<Skip>()?.map(|_| items.push(Value::Null))
                }
                _ => seq.next_element::<Skip>()?.map(|_| ()),
            };
            if more.is_none() {
                return Ok(Value::Array(items));
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            match self.0.member(key.as_str()) {
                // Like `Value`'s own parse, a repeated key keeps its first position and its
                // last value.
                Some(node) => {
                    let value = access.next_value_seed(Prune(node))?;
                    members.insert(key.into_owned(), value);
                }
                None => {
                    access.next_value::<Skip>()?;
                }
            }
        }
        Ok(Value::Object(members))
    }
}

/// A member name, borrowed from the body unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_owned(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_owned()))
    }
}

/// A value that is checked and dropped. Unlike `IgnoredAny` it descends through
/// `deserialize_any`, so serde_json applies the same nesting limit as to values it keeps: a
/// body is refused for its depth wherever the depth is.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor).map(|()| Skip)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        // Member names are plain strings: no nesting to limit.
        while access.next_key::<IgnoredAny>()?.is_some() {
            access.next_value::<Skip>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::Shape;
    use crate::extract::jsonpath::{JaywayPath, Resolved};
    use crate::extract::tests::{definite_paths, json_documents};

    fn shape(paths: &[&str]) -> Shape {
        let compiled: Vec<JaywayPath> = paths
            .iter()
            .map(|p| JaywayPath::compile(p).unwrap())
            .collect();
        Shape::of(&compiled)
    }

    #[test]
    fn only_plain_definite_paths_can_be_pruned() {
        for whole in [
            vec!["$"],
            vec!["$.a", "$..b"],
            vec!["$.a[*]"],
            vec!["$.a[-1]"],
            vec!["$.a[?(@.b)]"],
            vec!["$.a", "$.['b','c']"],
        ] {
            assert_eq!(shape(&whole), Shape::Whole, "{whole:?}");
        }
        for pruned in [
            vec!["$.a"],
            vec!["$.a.b", "$.a", "$.c[2].d"],
            vec!["$.a.length()"],
        ] {
            assert!(matches!(shape(&pruned), Shape::Paths(_)), "{pruned:?}");
        }
    }

    #[test]
    fn the_pruned_document_holds_what_the_paths_read_and_no_more() {
        let body = r#"{"action":"deploy","big":{"x":[1,2,3],"y":"z"},"context":{"runId":"r1","by":"me"},"list":[{"a":1},{"a":2},{"a":3}]}"#;
        let doc = shape(&["$.action", "$.context.runId", "$.list[1].a"])
            .parse(body)
            .unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"action":"deploy","context":{"runId":"r1"},"list":[null,{"a":2}]})
        );
        // A path ending at an object keeps all of it, in document order.
        let doc = shape(&["$.big", "$.big.y"]).parse(body).unwrap();
        assert_eq!(doc.to_string(), r#"{"big":{"x":[1,2,3],"y":"z"}}"#);
    }

    #[test]
    fn invariant_a_pruned_parse_refuses_what_a_full_parse_refuses() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for body in [
            format!(r#"{{"skipped":{deep},"action":"a"}}"#),
            r#"{"skipped":"\q","action":"a"}"#.to_owned(),
            "{\"skipped\":\"tab\there\",\"action\":\"a\"}".to_owned(),
            r#"{"skipped":[1,,2],"action":"a"}"#.to_owned(),
            r#"{"skipped":01,"action":"a"}"#.to_owned(),
            r#"{"action":"a"} trailing"#.to_owned(),
            r#"{"action":"a","#.to_owned(),
            r#"{"action":"a","skipped":{"k":1,}}"#.to_owned(),
        ] {
            let full = serde_json::from_str::<Value>(&body);
            let pruned = shape(&["$.action"]).parse(&body);
            assert!(full.is_err(), "{body}");
            assert!(pruned.is_err(), "{body}");
            let (full, pruned) = (full.unwrap_err(), pruned.unwrap_err());
            assert_eq!(
                (full.line(), full.column()),
                (pruned.line(), pruned.column()),
                "{body}"
            );
        }
    }

    proptest! {
        /// Every path of a shape finds the same value in the pruned document as in the whole.
        #[test]
        fn paths_agree_on_pruned_and_whole_documents(
            doc in json_documents("[ab\"]{1,2}", "[ab\"\\\\\u{e9}]{0,3}"),
            paths in prop::collection::vec(definite_paths(), 1..4),
        ) {
            let text = doc.to_string();
            let compiled: Vec<JaywayPath> =
                paths.iter().map(|p| JaywayPath::compile(p).unwrap()).collect();
            let pruned = Shape::of(&compiled).parse(&text).unwrap();
            let whole: Value = serde_json::from_str(&text).unwrap();
            for path in &compiled {
                let (a, b): (Resolved, Resolved) = (path.evaluate(&pruned), path.evaluate(&whole));
                prop_assert_eq!(a, b, "{:?}", path);
            }
        }

        /// On any text, a pruned parse succeeds exactly when a full parse does.
        #[test]
        fn pruned_and_full_parses_accept_the_same_texts(text in "[\\[\\]{}\",:a0-9 .e\\\\-]{0,40}") {
            let full = serde_json::from_str::<Value>(&text).is_ok();
            let pruned = shape(&["$.a", "$.a0[1]"]).parse(&text).is_ok();
            prop_assert_eq!(full, pruned, "{}", text);
        }
    }
}
