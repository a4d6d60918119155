//! The procedural macros of [`qila-sdk`](https://docs.rs/qila-sdk). Use them through `qila_sdk::action`; this
//! crate is an implementation detail and its output refers to `::qila_sdk`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, ReturnType, parse_macro_input};

/// Declares a plugin action. See `qila_sdk::action` for the documentation.
#[proc_macro_attribute]
pub fn action(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut name: Option<LitStr> = None;
    let mut example: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("example") {
            example = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta
                .error("unknown argument: expected `name = \"...\"` or `example = r#\"{...}\"#`"))
        }
    });
    parse_macro_input!(args with parser);
    let function = parse_macro_input!(item as ItemFn);
    match expand(name, example, function) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(
    name: Option<LitStr>,
    example: Option<LitStr>,
    function: ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &function.sig;
    let ident = &sig.ident;
    if let Some(t) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            t,
            "an action is a plain function: it cannot be `async`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "an action cannot be generic",
        ));
    }
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new_spanned(
            receiver,
            "an action is a free function, not a method",
        ));
    }
    if matches!(sig.output, ReturnType::Default) {
        return Err(syn::Error::new_spanned(
            sig,
            "an action returns `Result<Output, Error>`",
        ));
    }
    let call = match sig.inputs.len() {
        1 => quote! { |input, _: &::qila_sdk::Context| #ident(input) },
        2 => quote! { #ident },
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.inputs,
                "an action takes its input and, optionally, `&Context`: `fn(input: In, ctx: &Context) -> Result<Out, Error>`",
            ));
        }
    };
    if let Some(FnArg::Typed(arg)) = sig.inputs.first()
        && matches!(*arg.ty, syn::Type::Reference(_))
    {
        return Err(syn::Error::new_spanned(
            &arg.ty,
            "an action takes its input by value (an owned, `Deserialize` type)",
        ));
    }

    let name = match name {
        Some(lit) => {
            let value = lit.value();
            if !is_valid_name(&value) {
                return Err(syn::Error::new_spanned(
                    lit,
                    "an action name is lower-case letters, digits, `-` and `_`, starting with a letter",
                ));
            }
            value
        }
        None => ident.to_string().trim_start_matches("r#").replace('_', "-"),
    };
    let summary = summary(&function.attrs).ok_or_else(|| {
        syn::Error::new_spanned(
            ident,
            "document the action: the first paragraph of its doc comment (`/// ...`) becomes its summary",
        )
    })?;
    let example = match example {
        Some(lit) => quote! { ::core::option::Option::Some(#lit) },
        None => quote! { ::core::option::Option::None },
    };
    let vis = &function.vis;
    let name = LitStr::new(&name, Span::call_site());
    let summary = LitStr::new(&summary, Span::call_site());

    Ok(quote! {
        #function

        // A braced struct lives in the type namespace only, so it can share the function's name: `plugin!` finds
        // the action's entry through it, and the function stays a plain function that tests can call.
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #ident {}

        impl #ident {
            #[doc(hidden)]
            pub const ACTION: ::qila_sdk::__private::ActionEntry = ::qila_sdk::__private::ActionEntry {
                name: #name,
                summary: #summary,
                example: #example,
                input_schema: || ::qila_sdk::__private::input_schema(&(#call)),
                output_schema: || ::qila_sdk::__private::output_schema(&(#call)),
                check_input: |input| ::qila_sdk::__private::check_input(&(#call), input),
                run: |input, ctx| ::qila_sdk::__private::run(&(#call), input, ctx),
            };
        }
    })
}

/// The first paragraph of the doc comment, on one line.
fn summary(attrs: &[syn::Attribute]) -> Option<String> {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let Meta::NameValue(nv) = &attr.meta
            && let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
        {
            lines.push(s.value());
        }
    }
    let paragraph: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let summary = paragraph.join(" ");
    (!summary.is_empty()).then_some(summary)
}

fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}
