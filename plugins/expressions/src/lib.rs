//! The sandboxed expression evaluator: the guest side of `wit/evaluator/evaluator.wit`.
//!
//! For every evaluation the host calls [`load`](Guest::load) with the data the expressions may read, then
//! [`evaluate`](Guest::evaluate), which drops that data when it returns; the host may use an instance for many
//! evaluations, one at a time, and replaces it after a trap or a limit. All the work — parsing the context, compiling
//! and evaluating the expressions, rendering text — happens here, in linear memory the host caps and under fuel
//! the host meters; the host only copies strings in and out.

use std::cell::RefCell;

use qila_expr::{FailureKind as Kind, Piece as ExprPiece, Segment as ExprSegment};

wit_bindgen::generate!({
    world: "evaluator",
    path: "../../wit/evaluator",
});

thread_local! {
    /// What `load` parsed, until `evaluate` takes it.
    static CONTEXT: RefCell<Option<qila_expr::minijinja::Value>> = const { RefCell::new(None) };
}

struct Evaluator;

impl Guest for Evaluator {
    fn load(context: String) -> Result<(), String> {
        let root = qila_expr::parse_context(&context).map_err(|f| f.message)?;
        drop(context);
        CONTEXT.with(|c| *c.borrow_mut() = Some(root));
        Ok(())
    }

    fn evaluate(pieces: Vec<Piece>, max_output: u64) -> Result<Vec<String>, Failure> {
        let pieces: Vec<ExprPiece> = pieces.into_iter().map(from_wit).collect();
        let max = usize::try_from(max_output).unwrap_or(usize::MAX);
        // The context is dropped with this call: an instance the host keeps for the next evaluation holds no data
        // of this one.
        CONTEXT.with(|c| {
            let context = c.borrow_mut().take();
            let Some(root) = context.as_ref() else {
                return Err(Failure {
                    piece: None,
                    expression: None,
                    kind: FailureKind::Failed,
                    message: "evaluate was called before load".into(),
                });
            };
            qila_expr::evaluate(root, &pieces, max, |i| {
                evaluating(u32::try_from(i).unwrap_or(u32::MAX))
            })
            .map_err(to_wit)
        })
    }
}

fn from_wit(piece: Piece) -> ExprPiece {
    match piece {
        Piece::Value(s) => ExprPiece::Value(s),
        Piece::Condition(s) => ExprPiece::Condition(s),
        Piece::Text(segments) => ExprPiece::Text(
            segments
                .into_iter()
                .map(|s| match s {
                    Segment::Literal(t) => ExprSegment::Literal(t),
                    Segment::Expression(t) => ExprSegment::Expression(t),
                })
                .collect(),
        ),
    }
}

fn to_wit(f: qila_expr::Failure) -> Failure {
    let kind = match f.kind {
        Kind::Invalid => FailureKind::Invalid,
        Kind::Undefined => FailureKind::Undefined,
        Kind::NotJson => FailureKind::NotJson,
        Kind::OutputLimit => FailureKind::OutputLimit,
        // The limits the host enforces (memory, work, time) never come from inside; anything else is a failure.
        _ => FailureKind::Failed,
    };
    Failure {
        piece: f.piece.and_then(|p| u32::try_from(p).ok()),
        expression: f.expression,
        kind,
        message: f.message,
    }
}

export!(Evaluator);
