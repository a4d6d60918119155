//! Host-side bindings of the `qila:plugin` worlds, generated from `wit/`: `action-plugin` here, `detector-plugin`
//! in [`detector`] (sharing the `types` and `log` interfaces, so one host implementation serves both).

wasmtime::component::bindgen!({
    world: "action-plugin",
    path: "../../wit",
    imports: { default: async },
    exports: { default: async },
});

/// Bindings of the `qila:plugin/detector-plugin` world.
pub(crate) mod detector {
    wasmtime::component::bindgen!({
        world: "detector-plugin",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "qila:plugin/types": crate::bindings::qila::plugin::types,
            "qila:plugin/log": crate::bindings::qila::plugin::log,
        },
    });
}
