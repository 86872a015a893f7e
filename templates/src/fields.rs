//! Compile-time analysis of a parsed handlebars template: which recipient fields it uses, and
//! whether it uses anything that would make every recipient fail (a variable that is not a
//! column, a helper that does not exist, partials). Finding these at launch turns a campaign of
//! a million failures into one clear error; the list of used fields also lets `render` refuse a
//! short row up front, even where handlebars would quietly treat an absent field as false
//! (`{{#if field}}`).

use std::collections::HashMap;

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template};

use crate::error::TemplateError;

/// Helpers a template may call: handlebars' built-ins plus ours.
pub(crate) const KNOWN_HELPERS: &[&str] = &[
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "raw",
    "log",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
    crate::render::URLENCODE_HELPER,
];

/// Block helpers whose body is rendered with another context than the recipient's fields.
const CONTEXT_CHANGING: &[&str] = &["each", "with"];

/// Walks one template, checking its references against the recipient list's columns.
pub(crate) struct FieldCheck<'a> {
    file: &'static str,
    /// Column name → column index.
    columns: &'a HashMap<&'a str, usize>,
    /// Indices of the columns the template uses, in first-use order, without repeats.
    used: Vec<usize>,
}

impl<'a> FieldCheck<'a> {
    /// Checks `template` (from `file`) and returns the indices of the columns it uses.
    pub(crate) fn run(
        file: &'static str,
        template: &Template,
        columns: &'a HashMap<&'a str, usize>,
    ) -> Result<Vec<usize>, TemplateError> {
        let mut check = FieldCheck {
            file,
            columns,
            used: Vec::new(),
        };
        check.template(template, 0, (None, None))?;
        Ok(check.used)
    }

    /// `depth` counts the context changes (each/with) between this template and the root.
    fn template(
        &mut self,
        template: &Template,
        depth: usize,
        outer: (Option<usize>, Option<usize>),
    ) -> Result<(), TemplateError> {
        for (i, element) in template.elements.iter().enumerate() {
            let at = template
                .mapping
                .get(i)
                .map_or(outer, |m| (Some(m.0), Some(m.1)));
            match element {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                    self.helper(ht, depth, at)?;
                }
                TemplateElement::HelperBlock(ht) => self.helper(ht, depth, at)?,
                TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                    return Err(self.unsupported(at, "partials"));
                }
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                    return Err(self.unsupported(at, "decorators"));
                }
                #[allow(unreachable_patterns)]
                _ => return Err(self.unsupported(at, "these constructs")),
            }
        }
        Ok(())
    }

    fn helper(
        &mut self,
        ht: &HelperTemplate,
        depth: usize,
        at: (Option<usize>, Option<usize>),
    ) -> Result<(), TemplateError> {
        let name_only = !ht.block && ht.params.is_empty() && ht.hash.is_empty();
        let helper_name = match &ht.name {
            Parameter::Path(path) if name_only => {
                if is_helper(path_raw(path)) {
                    return Ok(());
                }
                return self.path(path, depth, at);
            }
            Parameter::Name(name) if name_only && !is_helper(name) => {
                return self.field(name, name, at);
            }
            Parameter::Name(name) => name.as_str(),
            Parameter::Path(path) => path_raw(path),
            Parameter::Subexpression(sub) => {
                return self.element(sub.as_element(), depth, at);
            }
            _ => "",
        };
        if !is_helper(helper_name) {
            return Err(TemplateError::UnknownHelper {
                file: self.file,
                line: at.0,
                column: at.1,
                name: helper_name.to_owned(),
            });
        }
        for param in &ht.params {
            self.param(param, depth, at)?;
        }
        let mut hash: Vec<_> = ht.hash.iter().collect();
        hash.sort_by(|a, b| a.0.cmp(b.0));
        for (_, param) in hash {
            self.param(param, depth, at)?;
        }
        if let Some(inner) = &ht.template {
            let inner_depth = if CONTEXT_CHANGING.contains(&helper_name) {
                depth + 1
            } else {
                depth
            };
            self.template(inner, inner_depth, at)?;
        }
        if let Some(inverse) = &ht.inverse {
            self.template(inverse, depth, at)?;
        }
        Ok(())
    }

    fn element(
        &mut self,
        element: &TemplateElement,
        depth: usize,
        at: (Option<usize>, Option<usize>),
    ) -> Result<(), TemplateError> {
        match element {
            TemplateElement::Expression(ht) => self.helper(ht, depth, at),
            _ => Err(self.unsupported(at, "such subexpressions")),
        }
    }

    fn param(
        &mut self,
        param: &Parameter,
        depth: usize,
        at: (Option<usize>, Option<usize>),
    ) -> Result<(), TemplateError> {
        match param {
            Parameter::Path(path) => self.path(path, depth, at),
            Parameter::Subexpression(sub) => self.element(sub.as_element(), depth, at),
            _ => Ok(()),
        }
    }

    fn path(
        &mut self,
        path: &Path,
        depth: usize,
        at: (Option<usize>, Option<usize>),
    ) -> Result<(), TemplateError> {
        let Path::Relative((segs, raw)) = path else {
            // @index, @key, @first...: block data, not fields.
            return Ok(());
        };
        let mut level = depth;
        let mut named = Vec::with_capacity(segs.len());
        for seg in segs {
            match seg {
                PathSeg::Named(name) => named.push(name.as_str()),
                PathSeg::Ruled(rule) if named.is_empty() => match format!("{rule:?}").as_str() {
                    "path_root" => level = 0,
                    "path_up" => level = level.saturating_sub(1),
                    // A local (@) path inside a relative one: not a field.
                    _ => return Ok(()),
                },
                _ => return Ok(()),
            }
        }
        if level > 0 {
            // Relative to an each/with context: cannot be checked here, strict mode does at
            // render time.
            return Ok(());
        }
        match named.as_slice() {
            [] => Ok(()),
            [name] => self.field(name, raw, at),
            // Fields are strings: `a.b` never resolves.
            _ => Err(self.unknown(raw, at)),
        }
    }

    fn field(
        &mut self,
        name: &str,
        raw: &str,
        at: (Option<usize>, Option<usize>),
    ) -> Result<(), TemplateError> {
        match self.columns.get(name) {
            Some(&index) => {
                if !self.used.contains(&index) {
                    self.used.push(index);
                }
                Ok(())
            }
            None => Err(self.unknown(raw, at)),
        }
    }

    fn unknown(&self, raw: &str, at: (Option<usize>, Option<usize>)) -> TemplateError {
        TemplateError::UnknownField {
            file: self.file,
            line: at.0,
            column: at.1,
            name: raw.to_owned(),
        }
    }

    fn unsupported(&self, at: (Option<usize>, Option<usize>), what: &'static str) -> TemplateError {
        TemplateError::Unsupported {
            file: self.file,
            line: at.0,
            column: at.1,
            what,
        }
    }
}

fn is_helper(name: &str) -> bool {
    KNOWN_HELPERS.contains(&name)
}

fn path_raw(path: &Path) -> &str {
    match path {
        Path::Relative((_, raw)) | Path::Local((_, _, raw)) => raw,
    }
}
