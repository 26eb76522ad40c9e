//! A test-only component that is valid Wasm but does not fit the
//! `pet-handler` world: the host must refuse to swap it in.

wit_bindgen::generate!({
    inline: "
        package test:misfit;
        world misfit {
            export answer: func() -> u32;
        }
    ",
});

struct Misfit;

impl Guest for Misfit {
    fn answer() -> u32 {
        42
    }
}

export!(Misfit);
