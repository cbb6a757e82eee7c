//! XEP-0004 data forms for the commands: the fields they ask with, the result table, and
//! reading what was submitted. Numbers are typed with XEP-0122 (`xs:decimal`) so clients draw
//! number fields.

use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType, Option_};
use tokio_xmpp::parsers::data_forms_validate::{Datatype, Method, Validate};
use tokio_xmpp::parsers::ns;

use super::sessions::Values;

/// A form to fill in (XEP-0004 §3.1 `type='form'`).
pub fn form(title: &str, instructions: &str, fields: Vec<Field>) -> DataForm {
    DataForm {
        type_: DataFormType::Form,
        title: Some(title.to_string()),
        instructions: Some(instructions.to_string()),
        fields,
    }
}

/// A result with plain fields (XEP-0004 §3.1 `type='result'`).
pub fn result(title: &str, fields: Vec<Field>) -> DataForm {
    DataForm {
        type_: DataFormType::Result_,
        title: Some(title.to_string()),
        instructions: None,
        fields,
    }
}

/// A labelled field of `type_`.
pub fn field(var: &str, type_: FieldType, label: &str) -> Field {
    let mut field = Field::new(var, type_);
    field.label = Some(label.to_string());
    field
}

/// A read-only text field in a result.
pub fn text(var: &str, label: &str, value: &str) -> Field {
    let mut field = field(var, FieldType::TextSingle, label);
    field.values.push(value.to_string());
    field
}

/// A choice among `options` (value, label), with `chosen` preselected.
pub fn choice(
    var: &str,
    type_: FieldType,
    label: &str,
    options: Vec<(String, String)>,
    chosen: &[String],
) -> Field {
    let mut field = field(var, type_, label);
    field.options = options
        .into_iter()
        .map(|(value, label)| Option_ {
            label: Some(label),
            value,
        })
        .collect();
    field.values = chosen.to_vec();
    field
}

/// A number field: text-single typed `xs:decimal` with XEP-0122 §3.1's basic validation.
pub fn decimal(var: &str, label: &str, value: Option<&str>, required: bool) -> Field {
    let mut field = field(var, FieldType::TextSingle, label);
    field.required = required;
    field.validate = Some(Validate {
        datatype: Some(Datatype::Decimal),
        method: Some(Method::Basic),
        list_range: None,
    });
    field.values.extend(value.map(String::from));
    field
}

/// A result table (XEP-0004 §3.4): `<reported/>` names the columns, one `<item/>` per row.
/// xmpp-parsers' [`DataForm`] has no reported/items, so they are appended to its element.
pub fn table(title: &str, columns: &[(&str, &str)], rows: Vec<Vec<String>>) -> Element {
    let mut element: Element = result(title, Vec::new()).into();
    let mut reported = Element::builder("reported", ns::DATA_FORMS).build();
    for (var, label) in columns {
        reported.append_child(
            Element::builder("field", ns::DATA_FORMS)
                .attr(xml_ncname!("var").into(), *var)
                .attr(xml_ncname!("label").into(), *label)
                .attr(xml_ncname!("type").into(), "text-single")
                .build(),
        );
    }
    element.append_child(reported);
    for row in rows {
        let mut item = Element::builder("item", ns::DATA_FORMS).build();
        for ((var, _), value) in columns.iter().zip(row) {
            item.append_child(
                Element::builder("field", ns::DATA_FORMS)
                    .attr(xml_ncname!("var").into(), *var)
                    .append(
                        Element::builder("value", ns::DATA_FORMS)
                            .append(value)
                            .build(),
                    )
                    .build(),
            );
        }
        element.append_child(item);
    }
    element
}

/// The first value entered for `var`, trimmed; `None` when empty.
pub fn single<'a>(values: &'a Values, var: &str) -> Option<&'a str> {
    values
        .get(var)
        .and_then(|v| v.first())
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// The values of a form's fields that `known` names (the fields the stage asked for); the
/// rest of a submission is ignored.
pub fn submitted(form: &DataForm, known: &[String]) -> Values {
    form.fields
        .iter()
        .filter_map(|f| {
            let var = f.var.as_ref()?;
            known.contains(var).then(|| (var.clone(), f.values.clone()))
        })
        .collect()
}

/// The field names of a form (what a submission of it may carry).
pub fn vars(form: &DataForm) -> Vec<String> {
    form.fields
        .iter()
        .filter(|f| f.type_ != FieldType::Fixed)
        .filter_map(|f| f.var.clone())
        .collect()
}

/// A number as XEP-0122's `xs:decimal`, also with a decimal comma as the chat commands take it.
pub fn number(values: &Values, var: &str) -> Result<Option<f64>, String> {
    match single(values, var) {
        None => Ok(None),
        Some(text) => crate::bridge::commands::number(text)
            .map(Some)
            .ok_or_else(|| format!("\"{text}\" is not a number.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_field_says_it_is_a_decimal() {
        let element: Element = form(
            "t",
            "i",
            vec![decimal("threshold", "Threshold", Some("25"), true)],
        )
        .into();
        let xml = String::from(&element);
        assert!(
            xml.contains(
                "<validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:decimal'><basic/></validate>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<required/>"), "{xml}");
    }

    #[test]
    fn a_table_has_reported_columns_then_one_item_per_row() {
        let element = table(
            "Readings",
            &[("sensor", "Sensor"), ("value", "Value")],
            vec![vec!["temp".into(), "21.5".into()]],
        );
        let xml = String::from(&element);
        assert!(
            xml.starts_with(
                "<x xmlns='jabber:x:data' type='result'><title>Readings</title><reported>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<item><field var='sensor'><value>temp</value></field><field var='value'><value>21.5</value></field></item>"),
            "{xml}"
        );
        // It reads back as a data form.
        assert!(DataForm::try_from(element).is_ok());
    }

    #[test]
    fn only_the_fields_asked_for_are_kept_and_numbers_are_checked() {
        let submission = DataForm {
            type_: DataFormType::Submit,
            title: None,
            instructions: None,
            fields: vec![
                Field::text_single("threshold", " 25,5 "),
                Field::text_single("other", "x"),
            ],
        };
        let values = submitted(&submission, &["threshold".to_string()]);
        assert_eq!(values.len(), 1);
        assert_eq!(number(&values, "threshold"), Ok(Some(25.5)));
        assert_eq!(number(&values, "margin"), Ok(None));
        let bad = submitted(
            &DataForm {
                fields: vec![Field::text_single("threshold", "warm")],
                ..submission
            },
            &["threshold".to_string()],
        );
        assert_eq!(
            number(&bad, "threshold"),
            Err("\"warm\" is not a number.".to_string())
        );
    }
}
