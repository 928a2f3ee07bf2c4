//! Exact bytes written by NumPy 2.4's `np.save` / `np.lib.format.write_array`
//! (generated once with python3 + numpy; see each constant's note).

/// np.save(np.arange(12, dtype=np.uint8).reshape(2, 1, 2, 3) * 20)
pub const U8_2X1X2X3: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (2, 1, 2, 3), }                                                    \x0a\x00\x14(<Pdx\x8c\xa0\xb4\xc8\xdc";
/// np.save(np.array([[0.5, -1.0], [2.25, 3.0], [-4.5, 1e-3]], dtype='<f4'))
pub const F4_3X2: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }                                                          \x0a\x00\x00\x00?\x00\x00\x80\xbf\x00\x00\x10@\x00\x00@@\x00\x00\x90\xc0o\x12\x83:";
/// np.save(np.array([[1/3, -2.0], [1e10, -1e-10]], dtype='<f8'))
pub const F8_2X2: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }                                                          \x0aUUUUUU\xd5?\x00\x00\x00\x00\x00\x00\x00\xc0\x00\x00\x00 _\xa0\x02B\xbb\xbd\xd7\xd9\xdf|\xdb\xbd";
/// write_array(np.array([[1.0, 2.0, 3.0]], dtype='<f4'), version=(2, 0))
pub const F4_V2: &[u8] = b"\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }                                                        \x0a\x00\x00\x80?\x00\x00\x00@\x00\x00@@";
/// write_array(np.array([[4.0], [5.0]], dtype='<f4'), version=(3, 0))
pub const F4_V3: &[u8] = b"\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }                                                        \x0a\x00\x00\x80@\x00\x00\xa0@";
/// np.save(np.asfortranarray(np.arange(6, dtype='<f4').reshape(2, 3)))
pub const F4_FORTRAN: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }                                                           \x0a\x00\x00\x00\x00\x00\x00@@\x00\x00\x80?\x00\x00\x80@\x00\x00\x00@\x00\x00\xa0@";
/// np.save(np.arange(4, dtype='<i8').reshape(2, 2))
pub const I8_2X2: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }                                                          \x0a\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00";
