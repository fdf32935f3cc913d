# The checks the program's end-to-end scripts share (included by tests/cli/*.cmake).
# expect_ok(command...): the command succeeds; its stdout and stderr are left in last_out / last_err.
# expect_error(needle command...): the command fails with exactly one line on stderr that mentions
# `needle`; that line is left in last_err.
function(expect_ok)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_out "${out}" PARENT_SCOPE)
  set(last_err "${err}" PARENT_SCOPE)
endfunction()

function(expect_error needle)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "should have failed: ${ARGN}")
  endif()
  string(STRIP "${err}" err)
  string(FIND "${err}" "\n" newline)
  if(NOT newline EQUAL -1)
    message(FATAL_ERROR "more than one line on stderr for ${ARGN}:\n${err}")
  endif()
  string(FIND "${err}" "${needle}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "stderr of ${ARGN} does not mention '${needle}':\n${err}")
  endif()
  set(last_err "${err}" PARENT_SCOPE)
endfunction()
