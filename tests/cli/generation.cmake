# Generation as a user runs it: text in and out through the checkpoint's tokenizer.json, tokens on
# stdout as they are made (a SIGTERM mid-generation leaves them there), the end-of-sequence id,
# --version, the model's summary line, progress only on a terminal, --verbose memory, run's
# --prompt-ids / --prompt, and init weights whose output is not one token repeated.
#   cmake -DPROGRAM=... -DWORK=... -P this
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

include("${CMAKE_CURRENT_LIST_DIR}/expect.cmake")

function(expect_in haystack needle what)
  string(FIND "${haystack}" "${needle}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "${what} does not mention '${needle}':\n${haystack}")
  endif()
endfunction()

# The ids of a --ids line as a CMake list.
function(ids_of text out)
  string(STRIP "${text}" text)
  string(REPLACE "," ";" list "${text}")
  set(${out} "${list}" PARENT_SCOPE)
endfunction()

set(model "${WORK}/model")
expect_ok("${PROGRAM}" init --out "${model}" --layers 2 --d-model 32 --vocab 256 --seed 3)
expect_in("${last_out}" "tokenizer.json" "init's report")
if(NOT EXISTS "${model}/tokenizer.json")
  message(FATAL_ERROR "init --vocab 256 wrote no tokenizer.json")
endif()
set(gen "${PROGRAM}" generate --model "${model}" --no-progress)

# ---------------------------------------------------------------------------
# init's weights are alive: greedy decoding does not repeat one token (it gave 3,3,3,... when the
# input token's own logit led through the tied embeddings).
# ---------------------------------------------------------------------------
expect_ok(${gen} --prompt-ids 1,2,3 --max-new-tokens 32)
ids_of("${last_out}" greedy)
list(LENGTH greedy n)
if(NOT n EQUAL 32)
  message(FATAL_ERROR "generate --prompt-ids printed ${n} ids, not 32: ${last_out}")
endif()
set(distinct ${greedy})
list(REMOVE_DUPLICATES distinct)
list(LENGTH distinct n_distinct)
if(n_distinct LESS 8)
  message(FATAL_ERROR "init's model repeats itself under greedy decoding (${n_distinct} distinct of 32): ${last_out}")
endif()
# The summary line: layers, d_model, schedule, parameters, dtype, device.
string(REGEX MATCH "model '[^']*': 2 layers, d_model 32, vocab 256, schedule fixed \\(0\\), [0-9.]+k parameters, f32, cpu \\([0-9]+ threads\\)"
       summary "${last_err}")
if(NOT summary)
  message(FATAL_ERROR "no model summary line on stderr:\n${last_err}")
endif()
# stderr is no terminal here: no progress display (its lines start with a carriage return).
string(FIND "${last_err}" "\r" cr)
if(NOT cr EQUAL -1 OR last_err MATCHES "prefill:")
  message(FATAL_ERROR "progress was shown although stderr is not a terminal:\n${last_err}")
endif()

# On a terminal (script(1) gives the program one): the prefill's line and, with stdout elsewhere,
# the per-token progress, each with its rate.
find_program(SCRIPT script)
if(SCRIPT)
  execute_process(COMMAND "${SCRIPT}" -qec "\"${PROGRAM}\" generate --model \"${model}\" --prompt-ids 1,2,3 --max-new-tokens 100000 >/dev/null"
                          /dev/null
                  RESULT_VARIABLE rc OUTPUT_VARIABLE tty ERROR_VARIABLE tty_err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "generate on a terminal failed (${rc}):\n${tty}\n${tty_err}")
  endif()
  if(NOT tty MATCHES "prefill: 3 tokens in [0-9.]+ s \\([0-9.]+ tokens/s\\)" OR NOT tty MATCHES "\r[0-9]+ / 100000 tokens, [0-9.]+ tokens/s")
    message(FATAL_ERROR "no progress with rates on a terminal:\n${tty}")
  endif()
endif()

# ---------------------------------------------------------------------------
# --prompt: the tokenizer's ids (bytes here: "abc" is 97,98,99), the text of the new tokens.
# ---------------------------------------------------------------------------
expect_ok(${gen} --prompt-ids 97,98,99 --max-new-tokens 12 --temperature 0.9 --seed 5)
set(by_ids "${last_out}")
expect_ok(${gen} --prompt "abc" --max-new-tokens 12 --temperature 0.9 --seed 5 --ids)
if(NOT last_out STREQUAL by_ids)
  message(FATAL_ERROR "--prompt abc --ids and --prompt-ids 97,98,99 differ:\n${last_out}\n${by_ids}")
endif()
expect_ok(${gen} --prompt "abc" --max-new-tokens 12 --temperature 0.9 --seed 5)
if(last_out MATCHES "^[0-9]+(,[0-9]+)+\n$")
  message(FATAL_ERROR "--prompt printed ids, not text: ${last_out}")
endif()
expect_in("${last_err}" "prompt 3 tokens" "generate --prompt's report")
expect_ok(${gen} --prompt "héllo 中" --max-new-tokens 4)
expect_in("${last_err}" "prompt 10 tokens" "a multi-byte prompt's report")

# Without tokenizer.json --prompt is an error naming the file.
expect_ok("${PROGRAM}" init --out "${WORK}/small" --layers 1 --d-model 32 --vocab 30)
if(EXISTS "${WORK}/small/tokenizer.json")
  message(FATAL_ERROR "init --vocab 30 wrote a byte tokenizer that its vocabulary cannot hold")
endif()
expect_error("tokenizer.json' does not exist" "${PROGRAM}" generate --model "${WORK}/small" --prompt "hi" --no-progress)
expect_in("${last_err}" "--prompt-ids" "the missing tokenizer's error")
expect_error("excludes" ${gen} --prompt "hi" --prompt-ids 1)
expect_error("generate needs a prompt" ${gen} --max-new-tokens 2)

# ---------------------------------------------------------------------------
# The end-of-sequence id: generation_config.json (int or list), else config.json; --ignore-eos.
# ---------------------------------------------------------------------------
list(GET greedy 0 first)
list(GET greedy 2 third)
file(WRITE "${model}/generation_config.json" "{\"eos_token_id\": ${first}}")
expect_ok(${gen} --prompt-ids 1,2,3 --max-new-tokens 32)
string(STRIP "${last_out}" out)
if(NOT out STREQUAL "")
  message(FATAL_ERROR "generate did not stop at eos_token_id ${first}: ${last_out}")
endif()
expect_in("${last_err}" "stopped at the end-of-sequence token" "the eos stop's report")
expect_ok(${gen} --prompt-ids 1,2,3 --max-new-tokens 32 --ignore-eos)
ids_of("${last_out}" ignored)
if(NOT ignored STREQUAL greedy)
  message(FATAL_ERROR "--ignore-eos changed the tokens: ${last_out}")
endif()
# A list: the first of its ids that comes ends the generation (greedy: the same tokens up to it).
list(GET greedy 1 second)
file(WRITE "${model}/generation_config.json" "{\"eos_token_id\": [99999, ${third}]}")
expect_ok(${gen} --prompt-ids 1,2,3 --max-new-tokens 32)
list(FIND greedy ${third} at)
list(SUBLIST greedy 0 ${at} want)
ids_of("${last_out}" got)
if(NOT "${got}" STREQUAL "${want}")
  message(FATAL_ERROR "eos_token_id [99999, ${third}]: got '${got}', want '${want}'")
endif()
file(WRITE "${model}/generation_config.json" "{\"eos_token_id\": \"two\"}")
expect_error("eos_token_id must be a non-negative integer or a list of them" ${gen} --prompt-ids 1 --max-new-tokens 2)
# config.json's eos_token_id when generation_config.json has none.
file(WRITE "${model}/generation_config.json" "{\"eos_token_id\": null}")
file(READ "${model}/config.json" config)
string(SUBSTRING "${config}" 1 -1 rest)  # after the opening brace
set(patched "{\n  \"eos_token_id\": ${first},${rest}")
file(WRITE "${model}/config.json" "${patched}")
expect_ok(${gen} --prompt-ids 1,2,3 --max-new-tokens 32)
string(STRIP "${last_out}" out)
if(NOT out STREQUAL "")
  message(FATAL_ERROR "generate did not stop at config.json's eos_token_id ${first}: ${last_out}")
endif()
file(WRITE "${model}/config.json" "${config}")
file(REMOVE "${model}/generation_config.json")

# A config.json whose sizes need more memory than the machine has: refused before anything is
# allocated (the weight files are tiny: the config alone decides), naming the weights.
expect_ok("${PROGRAM}" init --out "${WORK}/huge" --layers 1 --d-model 32 --vocab 30)
file(READ "${WORK}/huge/config.json" config)
string(REGEX REPLACE "\"hidden_size\": 32" "\"hidden_size\": 16777216" config "${config}")
string(REGEX REPLACE "\"num_hidden_layers\": 1" "\"num_hidden_layers\": 64" config "${config}")
string(REGEX REPLACE "\"num_heads\": [0-9]+" "\"num_heads\": 2097152" config "${config}")
file(WRITE "${WORK}/huge/config.json" "${config}")
expect_error("the largest part is the weights" "${PROGRAM}" generate --model "${WORK}/huge" --prompt-ids 1 --no-progress)
expect_error("the largest part is the weights" "${PROGRAM}" run --model "${WORK}/huge" --prompt-ids 1 --output "${WORK}/x.safetensors")

# ---------------------------------------------------------------------------
# --version, --verbose.
# ---------------------------------------------------------------------------
expect_ok("${PROGRAM}" --version)
if(NOT last_out MATCHES "^transmamba [0-9]+\\.[0-9]+")
  message(FATAL_ERROR "--version printed: ${last_out}")
endif()
expect_ok(${gen} --prompt-ids 1,2,3 --max-new-tokens 4 --verbose --transpoint 100)
foreach(part "generate held: weights" "KV cache" "state" "workspace" "total")
  expect_in("${last_err}" "${part}" "generate --verbose")
endforeach()

# ---------------------------------------------------------------------------
# run takes --prompt-ids / --prompt as well as --input.
# ---------------------------------------------------------------------------
expect_ok("${PROGRAM}" run --model "${model}" --prompt-ids 97,98,99 --output "${WORK}/ids.safetensors" --verbose)
expect_in("${last_out}" "logits (1 x 3 x 256)" "run --prompt-ids")
expect_in("${last_err}" "run held: weights" "run --verbose")
expect_ok("${PROGRAM}" run --model "${model}" --prompt "abc" --output "${WORK}/text.safetensors")
file(SHA256 "${WORK}/ids.safetensors" a)
file(SHA256 "${WORK}/text.safetensors" b)
if(NOT a STREQUAL b)
  message(FATAL_ERROR "run --prompt abc and --prompt-ids 97,98,99 wrote different logits")
endif()
expect_ok("${PROGRAM}" run --model "${model}" --prompt "abc" --output "${WORK}/last.safetensors" --last --states)
expect_in("${last_out}" "logits (1 x 256)" "run --prompt --last")
expect_error("run needs its ids" "${PROGRAM}" run --model "${model}" --output "${WORK}/x.safetensors")
expect_error("excludes" "${PROGRAM}" run --model "${model}" --input "${WORK}/ids.safetensors" --prompt-ids 1
             --output "${WORK}/x.safetensors")

# ---------------------------------------------------------------------------
# Tokens reach stdout as they are made: killed with SIGTERM mid-generation, the program leaves the
# tokens made so far in its stdout (it used to print them all at the end: 0 bytes).
# ---------------------------------------------------------------------------
set(stream "${WORK}/streamed.txt")
execute_process(
  COMMAND sh -c "\"$0\" generate --model \"$1\" --prompt-ids 1,2,3 --max-new-tokens 100000000 --no-progress >\"$2\" 2>/dev/null &
pid=$!
i=0
while [ ! -s \"$2\" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
sleep 0.3
kill -TERM $pid
wait $pid
echo $?" "${PROGRAM}" "${model}" "${stream}"
  OUTPUT_VARIABLE killed_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT killed_rc STREQUAL "143")
  message(FATAL_ERROR "the generation did not end by SIGTERM (exit status ${killed_rc})")
endif()
file(READ "${stream}" streamed)
# Ids joined by single commas, at least two. Said without a repeated group: CMake's regex engine
# recurses once per repetition of a group, and an idle machine makes tens of thousands of ids in
# the time allowed (cmake itself crashed on the one-pattern form).
string(FIND "${streamed}" ",," double_comma)
if(NOT streamed MATCHES "^[0-9]+,[0-9][0-9,]*$" OR NOT streamed MATCHES "[0-9]$" OR NOT double_comma EQUAL -1)
  string(LENGTH "${streamed}" bytes)
  message(FATAL_ERROR "after SIGTERM stdout holds ${bytes} bytes, not the tokens made so far: '${streamed}'")
endif()
