use super::*;

fn all(bytes: &[u8]) -> Result<Vec<(u32, Value<'_>)>, WireError> {
    fields(bytes)
        .map(|f| f.map(|f| (f.number, f.value)))
        .collect()
}

fn nested(depth: usize, leaf: &[u8]) -> Vec<u8> {
    // depth levels of field 1, the innermost holding field 2 = leaf.
    let mut w = Writer::new();
    w.bytes(2, leaf);
    let mut msg = w.into_bytes();
    for _ in 0..depth {
        let mut w = Writer::new();
        w.bytes(1, &msg);
        msg = w.into_bytes();
    }
    msg
}

#[test]
fn spec_examples() {
    // The encoding spec's examples: 150 in field 1, "testing" in field 2, {a: 150} in field 3.
    assert_eq!(
        all(&[0x08, 0x96, 0x01]).unwrap(),
        vec![(1, Value::Varint(150))]
    );
    let s = [0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67];
    assert_eq!(all(&s).unwrap(), vec![(2, Value::Len(b"testing"))]);
    let c = [0x1a, 0x03, 0x08, 0x96, 0x01];
    assert_eq!(get(&c, "3.1").unwrap(), vec![Value::Varint(150)]);
    let mut w = Writer::new();
    w.message(3, |m| {
        m.varint(1, 150);
    });
    assert_eq!(w.as_bytes(), &c);
}

#[test]
fn empty_message() {
    assert_eq!(all(&[]).unwrap(), vec![]);
    assert_eq!(get(&[], "1.2").unwrap(), vec![]);
    assert_eq!(first(&[], "1").unwrap(), None);
    assert_eq!(rewrite(&[], "1", |_| Some(vec![1])).unwrap(), None);
    assert!(check(&[]).is_ok());
    assert!(Writer::new().is_empty());
}

#[test]
fn round_trip_every_wire_type() {
    let mut w = Writer::with_capacity(64);
    w.varint(1, 0)
        .varint(1, u64::MAX)
        .int64(2, -1)
        .sint64(3, -2)
        .bool(4, true)
        .fixed64(5, 0x0102_0304_0506_0708)
        .fixed32(6, 0xdead_beef)
        .double(7, 1.5)
        .float(8, -0.25)
        .bytes(9, &[0, 255])
        .string(10, "héllo")
        .message(11, |m| {
            m.string(1, "in");
        })
        .varint(MAX_FIELD_NUMBER, 1);
    let bytes = w.into_bytes();
    let got = all(&bytes).unwrap();
    assert_eq!(
        got,
        vec![
            (1, Value::Varint(0)),
            (1, Value::Varint(u64::MAX)),
            (2, Value::Varint(u64::MAX)),
            (3, Value::Varint(3)),
            (4, Value::Varint(1)),
            (5, Value::I64(0x0102_0304_0506_0708)),
            (6, Value::I32(0xdead_beef)),
            (7, Value::I64(1.5f64.to_bits())),
            (8, Value::I32((-0.25f32).to_bits())),
            (9, Value::Len(&[0, 255])),
            (10, Value::Len("héllo".as_bytes())),
            (11, Value::Len(&[0x0a, 0x02, b'i', b'n'])),
            (MAX_FIELD_NUMBER, Value::Varint(1)),
        ]
    );
    assert_eq!(zigzag_decode(got[3].1.as_varint().unwrap()), -2);
    assert_eq!(got[9].1.as_str(), None);
    assert_eq!(got[10].1.as_str(), Some("héllo"));
    assert_eq!(got[5].1.as_fixed64(), Some(0x0102_0304_0506_0708));
    assert_eq!(got[6].1.as_fixed32(), Some(0xdead_beef));
    assert_eq!(got[6].1.as_varint(), None);
    assert_eq!(got[0].1.as_bytes(), None);
    assert_eq!(got[9].1.wire_type(), WireType::Len);

    // Writing back what was read, value by value, gives the same bytes.
    let mut again = Writer::new();
    for (n, v) in &got {
        again.value(*n, v);
    }
    assert_eq!(again.into_bytes(), bytes);
    // And copying the raw fields too.
    let mut copy = Writer::new();
    for f in fields(&bytes) {
        copy.field(&f.unwrap());
    }
    assert_eq!(copy.into_bytes(), bytes);
}

#[test]
fn zigzag() {
    for (v, z) in [
        (0i64, 0u64),
        (-1, 1),
        (1, 2),
        (-2, 3),
        (i64::MAX, u64::MAX - 1),
    ] {
        assert_eq!(zigzag_encode(v), z);
        assert_eq!(zigzag_decode(z), v);
    }
    assert_eq!(zigzag_decode(u64::MAX), i64::MIN);
}

#[test]
fn varint_lengths() {
    for (v, n) in [
        (0u64, 1),
        (127, 1),
        (128, 2),
        (16383, 2),
        (16384, 3),
        (u64::MAX >> 1, 9),
        (u64::MAX, 10),
    ] {
        assert_eq!(varint_len(v), n, "{v}");
        let mut b = Vec::new();
        put_varint(&mut b, v);
        assert_eq!(b.len(), n, "{v}");
    }
}

#[test]
fn ten_byte_varints_and_overflow() {
    // u64::MAX: nine 0xff and 0x01.
    let mut max = vec![0x08];
    max.extend([0xff; 9]);
    max.push(0x01);
    assert_eq!(all(&max).unwrap(), vec![(1, Value::Varint(u64::MAX))]);

    // A 10th byte over 1 is over 64 bits.
    let mut over = vec![0x08];
    over.extend([0xff; 9]);
    over.push(0x02);
    assert_eq!(all(&over), Err(WireError::VarintOverflow { offset: 0 }));

    // 11 bytes.
    let mut long = vec![0x08];
    long.extend([0x80; 10]);
    long.push(0x00);
    assert_eq!(all(&long), Err(WireError::VarintOverflow { offset: 0 }));

    // A padded (non-canonical) varint is read, and copied through as it was.
    let padded = [0x08, 0x81, 0x80, 0x00];
    let f = fields(&padded).next().unwrap().unwrap();
    assert_eq!(f.value, Value::Varint(1));
    assert_eq!(f.raw, &padded);

    // An overlong tag and an overlong length too.
    let mut tag = vec![0x80; 10];
    tag.push(0x01);
    assert_eq!(all(&tag), Err(WireError::VarintOverflow { offset: 0 }));
    let mut len = vec![0x0a, 0x00, 0x12];
    len.extend([0xff; 10]);
    assert_eq!(all(&len), Err(WireError::VarintOverflow { offset: 2 }));
}

#[test]
fn truncated_input() {
    let cases: &[&[u8]] = &[
        &[0x80],                   // a tag cut short
        &[0x08],                   // a tag and no varint
        &[0x08, 0x96],             // a varint cut short
        &[0x09, 1, 2, 3, 4, 5, 6], // fixed64: 7 of 8 bytes
        &[0x0d, 1, 2, 3],          // fixed32: 3 of 4 bytes
        &[0x0a],                   // a length missing
        &[0x0a, 0x80],             // a length cut short
    ];
    for c in cases {
        assert_eq!(all(c), Err(WireError::Truncated { offset: 0 }), "{c:?}");
        assert!(check(c).is_err());
        assert!(get(c, "1").is_err());
        assert!(rewrite(c, "1", |_| None).is_err());
    }
    // The offset is the faulty field's.
    let mut w = Writer::new();
    w.varint(1, 1).string(2, "ab");
    let mut b = w.into_bytes();
    b.extend([0x1d, 0, 0]);
    assert_eq!(check(&b), Err(WireError::Truncated { offset: 6 }));
}

#[test]
fn length_larger_than_input() {
    assert_eq!(
        all(&[0x0a, 0x05, b'a', b'b']),
        Err(WireError::LengthOutOfBounds {
            offset: 0,
            len: 5,
            available: 2
        })
    );
    // A length near u64::MAX does not overflow anything.
    let mut huge = vec![0x0a];
    huge.extend([0xff; 9]);
    huge.push(0x01);
    assert_eq!(
        all(&huge),
        Err(WireError::LengthOutOfBounds {
            offset: 0,
            len: u64::MAX,
            available: 0
        })
    );
    // Inside a sub-message, the length is checked against the sub-message, and the offset
    // counts from the start of the outer one.
    let inner = [0x08, 0x01, 0x12, 0x09, b'x'];
    let mut w = Writer::new();
    w.varint(7, 7).bytes(2, &inner).varint(3, 3);
    let outer = w.into_bytes();
    let want = WireError::LengthOutOfBounds {
        offset: 4 + 2,
        len: 9,
        available: 1,
    };
    assert_eq!(get(&outer, "2.1"), Err(want.clone()));
    assert_eq!(rewrite(&outer, "2.2", |_| None), Err(want));
    // The outer message alone is fine.
    assert!(check(&outer).is_ok());
    assert_eq!(get(&outer, "3").unwrap(), vec![Value::Varint(3)]);
}

#[test]
fn bad_tags() {
    assert_eq!(
        all(&[0x00, 0x00]),
        Err(WireError::BadFieldNumber {
            offset: 0,
            number: 0
        })
    );
    // 2^29 as a field number: tag 2^32.
    let mut b = Vec::new();
    put_varint(&mut b, 1 << 32);
    b.push(0);
    assert_eq!(
        all(&b),
        Err(WireError::BadFieldNumber {
            offset: 0,
            number: 1 << 29
        })
    );
    for (wt, err) in [
        (
            3u8,
            WireError::Group {
                offset: 2,
                number: 1,
            },
        ),
        (
            4,
            WireError::Group {
                offset: 2,
                number: 1,
            },
        ),
        (
            6,
            WireError::BadWireType {
                offset: 2,
                wire_type: 6,
            },
        ),
        (
            7,
            WireError::BadWireType {
                offset: 2,
                wire_type: 7,
            },
        ),
    ] {
        let b = [0x10, 0x01, 0x08 | wt, 0x00];
        assert_eq!(all(&b), Err(err.clone()), "wire type {wt}");
        assert_eq!(get(&b, "2"), Err(err.clone()));
    }
}

#[test]
fn iterator_stops_after_an_error() {
    let b = [0x08, 0x01, 0x0f, 0x08, 0x02];
    let mut it = fields(&b);
    assert_eq!(it.next().unwrap().unwrap().value, Value::Varint(1));
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    let mut it = fields(&b);
    it.next();
    assert_eq!(it.remaining(), &b[2..]);
}

#[test]
fn nested_and_repeated_paths() {
    // message { repeated Item items = 2; string name = 1; }  Item { repeated string tag = 1; int id = 2; }
    let mut w = Writer::new();
    w.message(2, |i| {
        i.string(1, "a").varint(2, 1).string(1, "b");
    })
    .string(1, "top")
    .varint(2, 99) // a varint under 2: no field 1 inside
    .message(2, |i| {
        i.varint(2, 2).string(1, "c");
    })
    .message(2, |_| {});
    let b = w.into_bytes();
    let tags: Vec<_> = get(&b, "2.1")
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["a", "b", "c"]);
    assert_eq!(
        get(&b, "2.2").unwrap(),
        vec![Value::Varint(1), Value::Varint(2)]
    );
    assert_eq!(first(&b, "2.1").unwrap(), Some(Value::Len(b"a")));
    assert_eq!(last(&b, "2.1").unwrap(), Some(Value::Len(b"c")));
    assert_eq!(first(&b, "1").unwrap(), Some(Value::Len(b"top")));
    assert_eq!(get(&b, "2").unwrap().len(), 4);
    assert_eq!(get(&b, "3").unwrap(), vec![]);
    assert_eq!(get(&b, "2.3.4").unwrap(), vec![]);
    // The same path, spelled every way.
    let p: Path = "2.1".parse().unwrap();
    assert_eq!(get(&b, &p).unwrap().len(), 3);
    assert_eq!(get(&b, &[2, 1]).unwrap().len(), 3);
    assert_eq!(get(&b, &[2u32, 1][..]).unwrap().len(), 3);
    assert_eq!(get(&b, &String::from("2.1")).unwrap().len(), 3);

    // "1.x" descends into the string "top", which is not a message: an error.
    assert!(matches!(get(&b, "1.1"), Err(WireError::Group { .. })));
}

#[test]
fn rewrite_keeps_everything_else() {
    // Unknown fields, odd encodings and order all survive.
    let mut w = Writer::new();
    w.varint(100, 5)
        .raw(&[0x08, 0x81, 0x00]) // field 1 = 1, padded
        .message(2, |i| {
            i.fixed32(9, 9)
                .string(1, "secret")
                .raw(&[0xf8, 0x07, 0x01]) // field 127 = 1
                .string(1, "secret2")
                .double(3, 2.0);
        })
        .string(3, "x")
        .message(2, |i| {
            i.string(1, "third");
        });
    let b = w.into_bytes();
    let mut seen = Vec::new();
    let out = rewrite(&b, "2.1", |v| {
        seen.push(v.to_vec());
        (v != b"secret2").then(|| "R".repeat(200).into_bytes())
    })
    .unwrap()
    .unwrap();
    assert_eq!(seen, [&b"secret"[..], b"secret2", b"third"]);

    let r = "R".repeat(200);
    let mut want = Writer::new();
    want.varint(100, 5)
        .raw(&[0x08, 0x81, 0x00])
        .message(2, |i| {
            i.fixed32(9, 9)
                .string(1, &r)
                .raw(&[0xf8, 0x07, 0x01])
                .string(1, "secret2")
                .double(3, 2.0);
        })
        .string(3, "x")
        .message(2, |i| {
            i.string(1, &r);
        });
    assert_eq!(out, want.into_bytes());
    // Lengths grew past one varint byte and still parse.
    assert!(check(&out).is_ok());
    assert_eq!(get(&out, "2.1").unwrap().len(), 3);

    // Nothing to change: None, also when f declines everything.
    assert_eq!(rewrite(&b, "2.1", |_| None).unwrap(), None);
    assert_eq!(rewrite(&b, "4", |_| Some(vec![])).unwrap(), None);
    // Non-len values at the path are not offered.
    assert_eq!(
        rewrite(&b, "100", |_| panic!("not a len value")).unwrap(),
        None
    );
    // Top-level repeated, shrinking to empty.
    let out = rewrite(&b, "2", |_| Some(Vec::new())).unwrap().unwrap();
    let mut want = Writer::new();
    want.varint(100, 5)
        .raw(&[0x08, 0x81, 0x00])
        .bytes(2, &[])
        .string(3, "x")
        .bytes(2, &[]);
    assert_eq!(out, want.into_bytes());
}

#[test]
fn rewrite_three_levels() {
    let leaf = "z".repeat(120);
    let mut w = Writer::new();
    w.message(1, |a| {
        a.varint(5, 5).message(2, |b| {
            b.message(3, |c| {
                c.string(4, &leaf).varint(6, 6);
            });
        });
    })
    .varint(9, 9);
    let b = w.into_bytes();
    let big = "y".repeat(300);
    let out = rewrite(&b, "1.2.3.4", |_| Some(big.clone().into_bytes()))
        .unwrap()
        .unwrap();
    let mut want = Writer::new();
    want.message(1, |a| {
        a.varint(5, 5).message(2, |b| {
            b.message(3, |c| {
                c.string(4, &big).varint(6, 6);
            });
        });
    })
    .varint(9, 9);
    assert_eq!(out, want.into_bytes());
}

#[test]
fn rewrite_fails_on_malformed_input_anywhere() {
    let mut w = Writer::new();
    w.string(1, "a");
    let mut b = w.into_bytes();
    b.push(0x12); // field 2, no length
    assert_eq!(
        rewrite(&b, "1", |_| Some(vec![])),
        Err(WireError::Truncated { offset: 3 })
    );
}

#[test]
fn depth_bound() {
    // A path of MAX_DEPTH numbers is followed...
    let msg = nested(MAX_DEPTH - 1, b"leaf");
    let mut path = vec![1u32; MAX_DEPTH - 1];
    path.push(2);
    assert_eq!(get(&msg, &path[..]).unwrap(), vec![Value::Len(b"leaf")]);
    let dotted = path
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let out = rewrite(&msg, dotted.as_str(), |_| Some(b"new".to_vec()))
        .unwrap()
        .unwrap();
    assert_eq!(out, nested(MAX_DEPTH - 1, b"new"));

    // ...one more is refused, in every spelling, before reading anything.
    let deeper = nested(MAX_DEPTH, b"leaf");
    let mut path = vec![1u32; MAX_DEPTH];
    path.push(2);
    let tooo = WireError::TooDeep {
        depth: MAX_DEPTH + 1,
    };
    assert_eq!(get(&deeper, &path[..]), Err(tooo.clone()));
    assert_eq!(Path::new(path.clone()), Err(tooo.clone()));
    let dotted = path
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    assert_eq!(dotted.parse::<Path>(), Err(tooo.clone()));
    assert_eq!(rewrite(&deeper, dotted.as_str(), |_| None), Err(tooo));
}

#[test]
fn bad_paths() {
    for p in [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "a",
        "0",
        "1.0",
        "536870912",
        "+1",
        "-1",
        " 1",
        "1 ",
    ] {
        assert!(
            matches!(p.parse::<Path>(), Err(WireError::BadPath { .. })),
            "{p:?}"
        );
        assert!(get(&[], p).is_err(), "{p:?}");
    }
    assert!(matches!(
        get(&[], &[0u32][..]),
        Err(WireError::BadPath { .. })
    ));
    assert!(matches!(get(&[], &[][..]), Err(WireError::BadPath { .. })));
    let p: Path = "536870911.01".parse().unwrap();
    assert_eq!(p.numbers(), &[MAX_FIELD_NUMBER, 1]);
    assert_eq!(p.to_string(), "536870911.1");
    let two: Path = "2".parse().unwrap();
    assert!(two.is_prefix_of(&"2.1".parse().unwrap()));
    assert!(two.is_prefix_of(&two));
    assert!(!two.is_prefix_of(&"21".parse().unwrap()));
    assert!(!"2.1".parse::<Path>().unwrap().is_prefix_of(&two));
    assert_eq!(Path::new([3, 4]).unwrap().to_string(), "3.4");
}

#[test]
#[should_panic(expected = "field numbers are 1 to")]
fn writer_refuses_field_zero() {
    Writer::new().varint(0, 1);
}

#[test]
fn packed() {
    let mut w = Writer::new();
    let mut p = Vec::new();
    for v in [3u64, 270, 86942] {
        put_varint(&mut p, v);
    }
    w.bytes(4, &p);
    let b = w.into_bytes();
    // The spec's packed example.
    assert_eq!(b, [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
    let v = first(&b, "4").unwrap().unwrap().as_bytes().unwrap();
    let got: Result<Vec<_>, _> = packed_varints(v).collect();
    assert_eq!(got.unwrap(), [3, 270, 86942]);
    let bad: Vec<_> = packed_varints(&[0x01, 0x80]).collect();
    assert_eq!(bad, [Ok(1), Err(WireError::Truncated { offset: 1 })]);
}

#[test]
fn errors_display() {
    let e = WireError::LengthOutOfBounds {
        offset: 3,
        len: 9,
        available: 1,
    };
    assert_eq!(
        e.to_string(),
        "the field at byte 3 is 9 bytes long but only 1 are left"
    );
    assert!("x"
        .parse::<Path>()
        .unwrap_err()
        .to_string()
        .contains("\"x\""));
}

/// Arbitrary bytes never make the reader panic (a small deterministic fuzz).
#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let paths: [&str; 4] = ["1", "2.1", "1.1.1", "3"];
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias towards plausible tags so parsing gets past the first byte.
        if len > 0 && next() % 2 == 0 {
            b[0] = [0x08, 0x0a, 0x12, 0x1a, 0x0d, 0x09][(next() % 6) as usize];
        }
        let _ = check(&b);
        for p in paths {
            let _ = get(&b, p);
            let r = rewrite(&b, p, |v| Some(v.iter().rev().copied().collect()));
            if let Ok(Some(out)) = r {
                // A successful rewrite is itself well-formed along the path.
                assert!(get(&out, p).is_ok());
            }
        }
    }
}
