//! The keys a config struct accepts, read from its `Deserialize` impl, so that a list of
//! known keys (for "unknown key" messages, or to split a table between two decoders) is
//! derived from the struct that defines them rather than kept by hand beside it.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names of a struct with derived `Deserialize`, in declaration order (after
/// `rename`; `skip`ped fields left out). Empty for anything that is not a plain struct
/// (a map, an enum, a struct with `flatten`).
///
/// It asks the impl to deserialize from a deserializer that records the `fields` list
/// serde passes to `deserialize_struct` and then fails: nothing is decoded.
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut introspect = Introspect { fields: &[] };
    let _ = T::deserialize(&mut introspect);
    introspect.fields
}

struct Introspect {
    fields: &'static [&'static str],
}

impl<'de> Deserializer<'de> for &mut Introspect {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field introspection"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.fields = fields;
        Err(de::Error::custom("field introspection"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Table {
        first: u32,
        #[serde(rename = "second-key")]
        second: String,
        #[serde(skip)]
        skipped: bool,
        #[serde(default)]
        last: Option<u8>,
    }

    #[test]
    fn names_in_declaration_order() {
        assert_eq!(field_names::<Table>(), ["first", "second-key", "last"]);
        assert!(field_names::<std::collections::BTreeMap<String, u32>>().is_empty());
    }
}
