//! Whether a model's answers can be scored at all: a model without a chat template (a base
//! model) received the prompt in a format it was not trained on, so its text is no answer to
//! the prompt, and a rubric coverage of 0 % would be noise reported as a finding.

use super::ctx::Ctx;
use super::view::View;
use protocol::results::{CheckStatus, chat_template_check};

/// Why a model's answers are not assessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotAssessed {
    /// The plan marks it a base model.
    BaseModel,
    /// The Reader warned that its GGUF has no chat template and the plan names none.
    NoChatTemplate,
}

impl NotAssessed {
    /// The reason in a table cell.
    pub(super) fn short(self) -> &'static str {
        match self {
            NotAssessed::BaseModel => "not assessed (base model)",
            NotAssessed::NoChatTemplate => "not assessed (no chat template)",
        }
    }

    /// The reason in a sentence.
    pub(super) fn why(self) -> &'static str {
        match self {
            NotAssessed::BaseModel => {
                "the plan marks it a base model: it was not trained to follow instructions, so it continues the prompt rather than answering it, and a rubric score would be noise"
            }
            NotAssessed::NoChatTemplate => {
                "its GGUF has no chat template (a base model), so the engine formatted the prompt in a way the model was not trained on and its text is not an answer to the prompt"
            }
        }
    }
}

/// Why a model's answer quality is not assessed, when it is not: the plan says it is a base
/// model, or the Reader warned that its GGUF has no chat template.
pub(super) fn not_assessed(ctx: &Ctx, v: &View) -> Option<NotAssessed> {
    if v.spec.is_some_and(|s| s.base_model) {
        return Some(NotAssessed::BaseModel);
    }
    let name = chat_template_check(&v.r.model);
    let results = &ctx.input.results;
    let mut checks = results.verification.checks.iter().chain(results.hosts.iter().flat_map(|h| h.checks.iter()));
    checks.any(|c| c.name == name && c.status == CheckStatus::Warn).then_some(NotAssessed::NoChatTemplate)
}

#[cfg(test)]
mod tests {
    use crate::fixture::report as fixture;
    use protocol::results::{Check, CheckStatus, chat_template_check};

    #[test]
    fn a_model_without_a_chat_template_is_not_assessed_rather_than_scored() {
        let quality = |input: &super::super::ReportInput| {
            let files = super::super::render_reports(input);
            let page = files.iter().find(|f| f.path == "quality.md").map(|f| f.bytes.clone()).unwrap_or_default();
            String::from_utf8_lossy(&page).into_owned()
        };
        let gemma_rows = |page: &str| -> Vec<String> {
            page.lines().filter(|l| l.starts_with("| gemma3-270m |")).map(str::to_string).collect()
        };
        let mut input = fixture();
        assert!(gemma_rows(&quality(&input)).iter().all(|r| !r.contains("not assessed")));
        input.results.verification.checks.push(Check {
            name: chat_template_check("gemma3-270m"),
            status: CheckStatus::Warn,
            measured: "no chat template".into(),
            threshold: None,
            detail: "the GGUF has no `tokenizer.chat_template`".into(),
        });
        let page = quality(&input);
        let rows = gemma_rows(&page);
        assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("not assessed (no chat template)")), "{page}");
        assert!(
            page.contains("Answer quality of gemma3-270m is not assessed: its GGUF has no chat template"),
            "{page}"
        );
        // A plan that marks the model a base model says so, whatever its template.
        input.results.verification.plan.models.iter_mut().filter(|m| m.name == "gemma3-270m").for_each(|m| {
            m.base_model = true;
        });
        let page = quality(&input);
        assert!(gemma_rows(&page).iter().all(|r| r.contains("not assessed (base model)")), "{page}");
        assert!(
            page.contains("Answer quality of gemma3-270m is not assessed: the plan marks it a base model"),
            "{page}"
        );
        let per_model = page.split("## Against the baseline").next().unwrap_or_default();
        let others = per_model.lines().filter(|l| l.starts_with("| qwen25-coder-14b |"));
        assert!(others.into_iter().all(|r| r.contains(" of ")), "other models are still scored: {page}");
    }
}
