//! Arbitrary bytes as a safetensors file, through the same path as `SafetensorsFile::open`
//! (minus the mmap). Every accepted file must hand out views that agree with its metadata.
#![no_main]

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::TensorSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SafetensorsFile::from_bytes("fuzz.safetensors", data.to_vec()) else {
        return;
    };
    let _ = file.metadata().len();
    for info in file.tensor_infos() {
        let view = file.tensor(&info.name).expect("listed tensor has a view");
        assert_eq!(view.data.len(), info.nbytes);
        assert_eq!(view.numel() * view.dtype.type_size(), view.data.len());
    }
});
