//! Maps a field path such as `listeners[0].upstream` to its line and column in the YAML text, so
//! that errors found after parsing (an unknown upstream name, say) can still point at the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

fn path_of(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Map { key: Some(k) } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Map { key: None } => {}
            Frame::Seq { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// Line and column (both 1-based) of every key and value, by field path.
pub fn locate(text: &str) -> HashMap<String, (usize, usize)> {
    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    // Called after a complete value: the enclosing map wants a key next, a sequence moves on.
    fn value_done(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
    while let Ok((event, mark)) = parser.next_token() {
        let at = (mark.line(), mark.col() + 1);
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::Alias(_)
        );
        if is_node {
            if let Some(Frame::Map { key }) = stack.last_mut() {
                if key.is_none() {
                    // This node is a key.
                    let name = match &event {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => String::from("?"),
                    };
                    *key = Some(name);
                    out.entry(path_of(&stack)).or_insert(at);
                    continue;
                }
            }
            out.entry(path_of(&stack)).or_insert(at);
        }
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map { key: None }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                value_done(&mut stack);
            }
            Event::Scalar(..) | Event::Alias(_) => value_done(&mut stack),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_maps_and_sequences() {
        let text = "a: 1\nlisteners:\n  - name: x\n    upstream: y\n  - { name: z }\n";
        let m = locate(text);
        assert_eq!(m["a"].0, 1);
        assert_eq!(m["listeners"].0, 2);
        assert_eq!(m["listeners[0].upstream"].0, 4);
        assert_eq!(m["listeners[1].name"].0, 5);
    }
}
