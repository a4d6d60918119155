//! Host-side bindings of the `qila:plugin/action-plugin` world, generated from `wit/plugin.wit`.

wasmtime::component::bindgen!({
    world: "action-plugin",
    path: "../../wit",
    imports: { default: async },
    exports: { default: async },
});
