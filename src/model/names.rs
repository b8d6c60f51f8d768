//! Class names: from the model's metadata (ultralytics writes `names` as a Python dict), from
//! the configuration (`model.class_names`, `model.names_file`), or COCO's for an 80-class model.
//! Pure functions; the model loader decides which source wins.

use std::sync::Arc;

use super::coco;

/// Where a model's class names came from (said in the log, `kadr inspect` and `/health`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamesSource {
    /// The `names` entry of the ONNX file's metadata.
    Metadata,
    /// `model.class_names` in the configuration.
    Config,
    /// `model.names_file`.
    File(String),
    /// COCO's 80 names, for a model of 80 classes without names of its own.
    Coco,
    /// `class0`, `class1`, ...: nothing named them.
    Numbered,
}

impl std::fmt::Display for NamesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamesSource::Metadata => write!(f, "the model's metadata"),
            NamesSource::Config => write!(f, "model.class_names"),
            NamesSource::File(p) => write!(f, "model.names_file ({p})"),
            NamesSource::Coco => write!(f, "COCO's 80 classes (the model has no names)"),
            NamesSource::Numbered => write!(f, "none found: numbered"),
        }
    }
}

/// A model's class names and their source.
#[derive(Debug, Clone)]
pub struct ClassNames {
    pub names: Arc<[String]>,
    pub source: NamesSource,
}

impl ClassNames {
    /// The name of class `id`; a class the names do not cover (an end-to-end graph's class id
    /// beyond them) is `class{id}`, never a panic.
    pub fn name(&self, id: u32) -> String {
        self.names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("class{id}"))
    }

    /// Names for a model of `classes` classes (`None`: the output does not say, as in
    /// YOLOv7's `--end2end` rows), from the first source that has them: the configuration
    /// (which the operator wrote for this model), then the metadata, then COCO's for 80.
    /// A count that disagrees with the model is an error naming both numbers.
    pub fn choose(
        classes: Option<usize>,
        configured: Option<(Vec<String>, NamesSource)>,
        metadata: Option<Vec<String>>,
    ) -> Result<ClassNames, String> {
        let check = |names: &[String], what: &dyn std::fmt::Display| match classes {
            Some(n) if names.len() != n => Err(format!(
                "{what} has {} class names, the model has {n} classes",
                names.len()
            )),
            _ => Ok(()),
        };
        if let Some((names, source)) = configured {
            check(&names, &source)?;
            return Ok(ClassNames {
                names: names.into(),
                source,
            });
        }
        if let Some(names) = metadata {
            check(&names, &NamesSource::Metadata)?;
            return Ok(ClassNames {
                names: names.into(),
                source: NamesSource::Metadata,
            });
        }
        let n = classes.unwrap_or(coco::COCO_CLASSES.len());
        let source = if n == coco::COCO_CLASSES.len() {
            NamesSource::Coco
        } else {
            NamesSource::Numbered
        };
        Ok(ClassNames {
            names: coco::class_names(n).into(),
            source,
        })
    }
}

/// Parse ultralytics' `names` metadata: a Python dict literal of consecutive integer keys from 0
/// to quoted strings, `{0: 'person', 1: "it's"}`.
pub fn parse_python_dict(text: &str) -> Result<Vec<String>, String> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("not a {index: 'name', ...} dict")?;
    let mut names = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or("an entry has no ':'")?;
        let key: usize = rest[..colon]
            .trim()
            .parse()
            .map_err(|_| format!("key {:?} is not an index", rest[..colon].trim()))?;
        if key != names.len() {
            return Err(format!(
                "keys must run 0, 1, 2, ...; found {key} after {}",
                names.len()
            ));
        }
        let (name, after) = python_string(rest[colon + 1..].trim_start())?;
        names.push(name);
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(names)
}

/// One quoted Python string literal at the start of `s`; returns it and the rest.
fn python_string(s: &str) -> Result<(String, &str), String> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"');
    let Some(quote) = quote else {
        return Err(format!("expected a quoted name at {:?}", truncate(s)));
    };
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c if c == quote => return Ok((out, &s[1 + i + 1..])),
            c => out.push(c),
        }
    }
    Err(format!("unterminated name at {:?}", truncate(s)))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Parse a names file: one name per line (Darknet's `coco.names`), or YAML with a `names:` key
/// holding a list (`- person` lines or `[person, car]`) or an index map (`0: person` lines), as
/// YOLOv5/YOLOv7 and ultralytics data files write it.
pub fn parse_names_file(text: &str) -> Result<Vec<String>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = lines
        .iter()
        .position(|l| l.trim_start().starts_with("names:") && !l.starts_with([' ', '\t']))
    else {
        let names: Vec<String> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Err("no names in it".into());
        }
        return Ok(names);
    };
    let inline = lines[at].trim_start()["names:".len()..].trim();
    let inline = inline.split(" #").next().unwrap_or("").trim();
    if !inline.is_empty() {
        let body = inline
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .ok_or("names: must be a [list], or a block of `- name` or `0: name` lines")?;
        return body
            .split(',')
            .map(|n| yaml_scalar(n.trim()))
            .filter(|n| !matches!(n, Ok(s) if s.is_empty()))
            .collect();
    }
    let mut names = Vec::new();
    for line in &lines[at + 1..] {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t', '-']) {
            break; // the next top-level key
        }
        if let Some(item) = t.strip_prefix("- ").or_else(|| t.strip_prefix('-')) {
            names.push(yaml_scalar(item.trim())?);
        } else if let Some((key, value)) = t.split_once(':') {
            let key: usize = key
                .trim()
                .parse()
                .map_err(|_| format!("key {key:?} under names: is not an index"))?;
            if key != names.len() {
                return Err(format!(
                    "keys under names: must run 0, 1, 2, ...; found {key} after {}",
                    names.len()
                ));
            }
            names.push(yaml_scalar(value.trim())?);
        } else {
            return Err(format!("cannot read {t:?} under names:"));
        }
    }
    if names.is_empty() {
        return Err("names: is empty".into());
    }
    Ok(names)
}

fn yaml_scalar(s: &str) -> Result<String, String> {
    let s = s.split(" #").next().unwrap_or("").trim();
    if s.starts_with(['\'', '"']) {
        return python_string(s).map(|(v, _)| v);
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ultralytics_metadata_names() {
        let names = parse_python_dict("{0: 'car', 1: 'truck', 2: \"it's\", 3: 'a\\'b'}").unwrap();
        assert_eq!(names, vec!["car", "truck", "it's", "a'b"]);
        assert_eq!(parse_python_dict("{}").unwrap(), Vec::<String>::new());
        assert!(parse_python_dict("{1: 'car'}").is_err());
        assert!(parse_python_dict("{0: car}").is_err());
        assert!(parse_python_dict("{0: 'car'").is_err());
        assert!(parse_python_dict("[car]").is_err());
    }

    #[test]
    fn names_files_of_every_shape() {
        assert_eq!(
            parse_names_file("person\nbicycle\n\ncar\n").unwrap(),
            ["person", "bicycle", "car"]
        );
        let yaml_list = "path: ../data\nnc: 2\nnames:\n  - car\n  - 'fire truck'\ntrain: x\n";
        assert_eq!(parse_names_file(yaml_list).unwrap(), ["car", "fire truck"]);
        let yaml_map = "names:\n  0: car\n  1: truck  # big\n";
        assert_eq!(parse_names_file(yaml_map).unwrap(), ["car", "truck"]);
        let inline = "nc: 3\nnames: [car, 'truck', \"bus\"]\n";
        assert_eq!(parse_names_file(inline).unwrap(), ["car", "truck", "bus"]);
        assert!(parse_names_file("names:\n  1: car\n").is_err());
        assert!(parse_names_file("").is_err());
        assert!(parse_names_file("names:\n").is_err());
    }

    #[test]
    fn the_configuration_wins_and_a_wrong_count_names_both_numbers() {
        let four: Vec<String> = ["car", "truck", "bus", "motorcycle"]
            .map(String::from)
            .into();
        let c = ClassNames::choose(Some(4), None, Some(four.clone())).unwrap();
        assert_eq!(
            (c.names.len(), c.source.clone()),
            (4, NamesSource::Metadata)
        );
        let c = ClassNames::choose(Some(80), None, None).unwrap();
        assert_eq!((c.name(0), c.source), ("person".into(), NamesSource::Coco));
        let c = ClassNames::choose(Some(2), None, None).unwrap();
        assert_eq!(
            (c.name(1), c.source.clone()),
            ("class1".into(), NamesSource::Numbered)
        );
        assert_eq!(c.name(7), "class7");
        let err = ClassNames::choose(Some(3), Some((four.clone(), NamesSource::Config)), None)
            .unwrap_err();
        assert!(
            err.contains("4 class names") && err.contains("3 classes"),
            "{err}"
        );
        let c = ClassNames::choose(None, Some((four, NamesSource::Config)), None).unwrap();
        assert_eq!(c.source, NamesSource::Config);
    }
}
